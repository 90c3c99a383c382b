# dcvd %post (RPM; $1 is 1 on install, 2 or more on upgrade): create the system user and the
# directories, tell systemd about the new unit. Works without a running systemd (image builds,
# containers): every systemctl call is guarded. The service is NOT enabled or started: it needs
# the DigiCert API key in /etc/dcvd/credentials/ first (see /usr/share/doc/dcvd/operations.md).

# 1. User and group "dcvd" (sysusers.d/dcvd.conf; useradd where systemd-sysusers is missing).
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/dcvd.conf || :
fi
if ! getent passwd dcvd >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/dcvd --no-create-home \
		--shell /usr/sbin/nologin --comment "dcvd DigiCert DCV daemon" dcvd || exit 1
fi

# 2. Directories (tmpfiles.d/dcvd.conf holds the same rules and re-applies them at boot).
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/dcvd.conf || :
fi
[ -d /etc/dcvd/credentials ] || install -d -m 0700 -o root -g root /etc/dcvd/credentials
[ -d /etc/dcvd/orders.d ] || install -d -m 0755 -o root -g root /etc/dcvd/orders.d
[ -d /var/lib/dcvd ] || install -d -m 0700 -o dcvd -g dcvd /var/lib/dcvd

# 3. systemd: only when it is the running init.
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
