"""``feedgate keys``: the cluster's signing keys, on the files every node loads.

* ``keys init`` makes what is missing: the first token key (signing from now), the audit
  checkpoint key, the evidence key, the secret key (sealing cameras' ONVIF passwords) and the
  relay's TLS files (a cluster CA and a certificate it signed), at the paths ``[keys]``
  names. Run it once, on the shared (or copied) key directory, before the first node starts.
* ``keys rotate`` adds the next token key, starting ``keys.rotate_after`` seconds from now
  (``--start-in``), so every node publishes it before any signs with it. The key it replaces
  keeps verifying for ``keys.overlap``.
* ``keys rotate --audit`` adds the next audit checkpoint key beside ``keys.audit_key``
  (``audit-<time>.pem``), starting the same way. Checkpoints name their kid, and the keys it
  replaces keep verifying the checkpoints they signed, forever (:mod:`tenants.audit.keys`).
* ``keys list`` shows each token key's kid, start, state (current, next, retiring until,
  expired) and file, then each audit key's; ``keys prune`` deletes the expired token keys and
  the private halves of audit keys retired longer than ``keys.overlap`` (their public halves
  stay, as ``audit-<time>.pub``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config import Config, ConfigError, load_config
from gateway.identity import KeyName, audit_ring, key_path, key_ring, load_key
from tenants.audit import key_id
from tenants.onvif import SecretBox
from tenants.tokens import SigningKey
from tenants.tokens.keyring import KeyRingError


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_init(args: argparse.Namespace) -> int:
    config = _config(args)
    ring = key_ring(config)
    made = []
    if not ring.directory.exists() or not ring.read():
        made.append(f"token key {ring.add(datetime.now(UTC)).path}")
    names: tuple[KeyName, ...] = ("audit_key", "evidence_key")
    for which in names:
        path = key_path(config, which)
        if which == "audit_key" and audit_ring(config).exists():
            audit_ring(config).load()  # rotated (its first key may be pruned): check, keep
        elif not path.exists():
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            made.append(f"{which.replace('_', ' ')} {path}")
            SigningKey.load_or_create(path)
        else:
            load_key(config, which)  # an unusable file is an error, not replaced
    # The key sealing cameras' ONVIF passwords in the register (tenants/onvif.py); a cluster
    # without keys.secret_key keeps no passwords (gateway.identity.load_secret_box).
    if config.keys.secret_key or not config.clustered:
        secret = Path(config.keys.secret_key or Path(config.data_dir) / "keys" / "secrets.key")
        if not secret.exists():
            secret.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            made.append(f"secret key {secret}")
        try:
            SecretBox.load(secret, create=True)  # an unusable file is an error, not replaced
        except ValueError as exc:
            raise ConfigError(str(secret), "keys.secret_key", f"not a usable key: {exc}") from None
    # The relay's TLS (gateway/cluster/tls.py): a cluster CA and one certificate it signed.
    k = config.keys
    if k.cluster_cert and k.cluster_key and k.cluster_ca:
        from gateway.cluster.tls import make_cluster_pki

        try:
            ca, cert, key = Path(k.cluster_ca), Path(k.cluster_cert), Path(k.cluster_key)
            for path in make_cluster_pki(ca, cert, key, config.cluster.tls_name):
                made.append(f"cluster TLS file {path}")
        except ValueError as exc:  # TlsError
            raise ConfigError(k.cluster_cert, "keys.cluster_cert", str(exc)) from None
    print("\n".join(f"created {m}" for m in made) if made else "every key exists already")
    ca_key = Path(k.cluster_ca).with_suffix(".key") if k.cluster_ca else None
    if ca_key is not None and ca_key.exists():
        print(
            f"note: {ca_key} signs cluster certificates; the nodes need only "
            f"{k.cluster_ca}, {k.cluster_cert} and {k.cluster_key}: keep it off them"
        )
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    config = _config(args)
    start_in = config.keys.rotate_after if args.start_in is None else args.start_in
    if start_in < config.keys.reload_interval:
        print(
            f"feedgate: warning: --start-in {start_in:g} s is shorter than keys.reload_interval "
            f"({config.keys.reload_interval:g} s): a node may meet a token of the new key "
            "before it has read it",
            file=sys.stderr,
        )
    if args.audit:
        ring = audit_ring(config)
        ring.load()  # the keys it follows must be readable
        new = ring.rotate(start_in=timedelta(seconds=start_in))
        kid = key_id(new.key.private_key.public_key())
        print(f"{kid} starts signing audit checkpoints at {_time(new.starts)} ({new.path})")
        return 0
    new = key_ring(config).rotate(start_in=timedelta(seconds=start_in))
    print(f"{new.kid} starts signing at {_time(new.starts)} ({new.path})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    config = _config(args)
    for entry in key_ring(config).load().entries():
        k = entry.ring_key
        state = entry.state if entry.until is None else f"{entry.state} until {_time(entry.until)}"
        print(f"{k.kid}  {_time(k.starts)}  {state:<32}  {k.path}")
    for ak, astate in audit_ring(config).entries():
        print(f"audit {ak.kid}  {_time(ak.starts)}  {astate:<32}  {ak.path}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    config = _config(args)
    removed = key_ring(config).prune()
    for path in removed:
        print(f"removed {path}")
    for path in audit_ring(config).prune():
        print(f"removed {path} (its public key is kept)")
        removed.append(path)
    if not removed:
        print("no expired keys")
    return 0


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ConfigError, KeyRingError, OSError) as exc:
            print(f"feedgate: {exc}", file=sys.stderr)
            return 2

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="the signing keys every node shares (init, rotate, list)")
    verbs = keys.add_subparsers(dest="verb", required=True)
    for name, func, text in (
        ("init", cmd_init, "make the keys [keys] names that do not exist yet"),
        ("rotate", cmd_rotate, "add the next token (or, with --audit, audit) signing key"),
        ("list", cmd_list, "the token keys with their state"),
        ("prune", cmd_prune, "delete token keys past their overlap"),
    ):
        p = verbs.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="the gateway's TOML config")
        if name == "rotate":
            p.add_argument(
                "--start-in",
                type=float,
                default=None,
                help="seconds until the new key signs (default keys.rotate_after)",
            )
            p.add_argument(
                "--audit",
                action="store_true",
                help="rotate the audit checkpoint key instead of the token key",
            )
        p.set_defaults(func=_run(func))
