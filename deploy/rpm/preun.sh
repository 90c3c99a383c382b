# dcvd %preun (RPM; $1 is 0 on removal, 1 or more on upgrade): on removal, stop and disable the
# daemon before its files go away. On upgrade it keeps running until %postun restarts it.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now dcvd.service >/dev/null 2>&1 || :
fi
exit 0
