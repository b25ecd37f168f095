// Package release builds Porthole's release artifacts from a source tree:
// static, version-stamped binaries for every supported Linux architecture, the
// tar.gz archives with their SHA256SUMS, the Debian package (nfpm) and the
// container images (OCI archives written with go-containerregistry, no Docker
// daemon). cmd/porthole-release drives it for `make dist`, `make deb` and
// `make image`.
//
// It lives in its own Go module so that the packaging libraries stay out of
// the daemons' dependency graph.
package release
