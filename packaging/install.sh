#!/usr/bin/env bash
# Install lpr-agent as a systemd service on a camera (Debian/Raspberry Pi OS/Ubuntu).
#
#   sudo packaging/install.sh                      # venv in /opt/lpr-agent/venv from this checkout
#   sudo packaging/install.sh --venv /srv/venv --no-pip   # reuse a venv that has lpr-agent
#   sudo systemctl enable --now lpr-agent && journalctl -u lpr-agent -f
#
# Steps: system user lpr-agent (group video for /dev/video*), a venv with the
# package, /etc/lpr-agent/agent.toml from the example (kept if present), the
# unit with ExecStart pointing at the venv, `lpr-agent config check`, daemon-reload.
# It does not enable or start the service. Idempotent: run it again to upgrade.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV=/opt/lpr-agent/venv
PIP=1
UNIT_DIR=/etc/systemd/system
USER_NAME=lpr-agent
PYTHON=${PYTHON:-python3}

usage() { sed -n '2,12p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --venv) VENV=$2; shift 2;;
    --no-pip) PIP=0; shift;;
    --unit-dir) UNIT_DIR=$2; shift 2;;
    -h|--help) usage 0;;
    *) echo "unknown option: $1" >&2; usage 2;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

echo "==> user $USER_NAME"
getent group video >/dev/null || groupadd --system video
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/lpr-agent \
          --shell /usr/sbin/nologin --groups video "$USER_NAME"
fi

if [ "$PIP" = 1 ]; then
  echo "==> venv $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "$SRC"
fi
[ -x "$VENV/bin/lpr-agent" ] || { echo "install.sh: $VENV/bin/lpr-agent missing" >&2; exit 1; }

echo "==> /etc/lpr-agent/agent.toml"
install -d -m 0750 -o root -g "$USER_NAME" /etc/lpr-agent
if [ ! -e /etc/lpr-agent/agent.toml ]; then
  install -m 0640 -o root -g "$USER_NAME" "$SRC/configs/agent.example.toml" /etc/lpr-agent/agent.toml
  echo "    installed the example: set [camera] camera_id/checkpoint_id and [uplink] server_url"
fi
"$VENV/bin/lpr-agent" config check /etc/lpr-agent/agent.toml

echo "==> $UNIT_DIR/lpr-agent.service"
sed "s|^ExecStart=/opt/lpr-agent/venv/bin/lpr-agent |ExecStart=$VENV/bin/lpr-agent |" \
    "$SRC/packaging/systemd/lpr-agent.service" > "$UNIT_DIR/lpr-agent.service.tmp"
mv "$UNIT_DIR/lpr-agent.service.tmp" "$UNIT_DIR/lpr-agent.service"
# ProtectHome=yes would hide a venv, the interpreter it links to (e.g. pyenv)
# or the source of an editable install under a home directory, and
# PrivateTmp=yes one under /tmp (a test checkout): relax only what such an
# install needs, in drop-ins, so the shipped unit stays fully hardened.
rm -f "$UNIT_DIR/lpr-agent.service.d/home.conf" "$UNIT_DIR/lpr-agent.service.d/tmp.conf"
pkg_dir=$("$VENV/bin/python" -c 'import lpr_agent, os; print(os.path.dirname(lpr_agent.__file__))')
for p in "$VENV" "$(readlink -f "$VENV/bin/python")" "$pkg_dir"; do
  case $p in
    /home/*|/root/*)
      mkdir -p "$UNIT_DIR/lpr-agent.service.d"
      printf '[Service]\nProtectHome=read-only\n' > "$UNIT_DIR/lpr-agent.service.d/home.conf";;
    /tmp/*|/var/tmp/*)
      mkdir -p "$UNIT_DIR/lpr-agent.service.d"
      printf '[Service]\nPrivateTmp=no\n' > "$UNIT_DIR/lpr-agent.service.d/tmp.conf";;
  esac
done
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "==> done: systemctl enable --now lpr-agent; journalctl -u lpr-agent; lpr-agent status"
