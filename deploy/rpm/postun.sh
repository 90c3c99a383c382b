# dcvd %postun (RPM; $1 is 0 after removal, 1 or more after an upgrade): forget the removed unit,
# or restart a running daemon onto the new binary (its state store migrates itself on start and
# in-flight units resume where they stopped). The state store /var/lib/dcvd, the credentials and
# the user are kept on removal (run `dcvd cleanup` first if records may still be published).
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart dcvd.service >/dev/null 2>&1 || :
	fi
fi
exit 0
