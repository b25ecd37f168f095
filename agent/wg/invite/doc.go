// Package invite keeps the agent's WireGuard identity and its phones: the
// agent's private key (made on first use), the peers file (each phone's
// public key, tunnel address and viewer; never a phone's private key), and
// the WireGuard config a phone imports, as text, terminal QR code and PNG.
//
// Both files live in the agent's state directory, readable by its owner
// only. porthole-agent invite writes them; the running agent reads them at
// start and follows changes with Store.Watch.
package invite
