#!/bin/sh
# deps.sh - install the Debian packages the namespace lab (test/lab) needs.
#
# Extra package names on the command line are installed too (.ci/run adds
# chromium for the demo's browser test).
#
# Idempotent and quick when everything is present (dpkg-query only; apt-get
# update runs only when a package is missing and its candidate is unknown).
# Called by `make lab-deps` and `.ci/run`. Needs root (or sudo) and apt.
#
# The lab runs miniupnpd and knotd itself, inside namespaces it creates; the
# packages' own services must never run on the host. miniupnpd-nftables ships
# no service (the Debian `miniupnpd` package, which does, is Breaks'd by it);
# knot enables knot.service on install, so a freshly installed, unconfigured
# knot is stopped and disabled again here.
set -eu

PKGS="miniupnpd-nftables miniupnpc natpmpc nftables iproute2 knot knot-dnsutils wireguard-tools $*"

say() { printf '[lab-deps] %s\n' "$*"; }
die() { printf '[lab-deps] ERROR: %s\n' "$*" >&2; exit 1; }

installed() { # PKG
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=""
for p in $PKGS; do
	installed "$p" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	say "all present:$(for p in $PKGS; do printf ' %s' "$p"; done)"
	exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "need root to install:$missing"
	SUDO="sudo"
fi

# Installing miniupnpd-nftables removes miniupnpd-iptables (Conflicts). On a
# machine that really routes with it, that is not ours to decide.
if installed miniupnpd-iptables; then
	die "miniupnpd-iptables is installed (a real router daemon?); the lab needs miniupnpd-nftables, which would replace it. Remove it yourself if that is intended."
fi

knot_was_installed=0
installed knot && knot_was_installed=1

export DEBIAN_FRONTEND=noninteractive
# The Debian miniupnpd package asks whether to start the daemon; say no in case
# anything pulls it in.
if command -v debconf-set-selections >/dev/null 2>&1; then
	echo "miniupnpd miniupnpd/start_daemon boolean false" | $SUDO debconf-set-selections || true
fi

# apt-get update only when some package has no install candidate yet.
need_update=0
for p in $missing; do
	cand=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
	if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
done
APT_OPTS="-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
if [ $need_update = 1 ]; then
	say "apt-get update"
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS update -q
fi
say "installing:$missing"
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS install -y -q --no-install-recommends $missing

# Keep the host clean: no miniupnpd service, and no knot service we just
# brought in (an existing, configured knot is the owner's business).
stop_unit() { # UNIT
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now "$1" >/dev/null 2>&1 || true
	else
		# no systemd running (container): undo the enablement symlinks only
		$SUDO rm -f "/etc/systemd/system/multi-user.target.wants/$1"
		if [ -x "/etc/init.d/${1%.service}" ] && command -v update-rc.d >/dev/null 2>&1; then
			$SUDO update-rc.d "${1%.service}" disable >/dev/null 2>&1 || true
			$SUDO "/etc/init.d/${1%.service}" stop >/dev/null 2>&1 || true
		fi
	fi
}
for unit in miniupnpd.service; do
	stop_unit "$unit"
done
if [ $knot_was_installed = 0 ]; then
	say "disabling knot.service on the host (the lab starts knotd inside its namespaces)"
	stop_unit knot.service
fi

command -v miniupnpd >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
/usr/sbin/miniupnpd --version 2>&1 | grep -q nftables || die "/usr/sbin/miniupnpd is not the nftables build"
say "done"
