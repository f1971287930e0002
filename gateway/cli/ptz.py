"""``feedgate ptz move|stop|goto|presets|preset|status|reserve|release|onvif-password``: PTZ from
a shell, over the gRPC ``PtzService`` (the same decisions as REST, the console and the ONVIF
facade: the policy's ptz right, the camera's lock and priorities, the rate limit, the audit).

``onvif-password`` works on the data dir (``--local --config FILE``): it prints the password a
principal's VMS gives feedgate's ONVIF facade, derived from the principal's stored Digest hash
(see :mod:`gateway.ptz.facade`), so an operator can hand it to the police's VMS.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.cli.client import CliError
from gateway.cli.parsing import load_config
from gateway.cli.verbs import Rpc, Verb, arg, listed, needs_local, shown

NOUNS = {"ptz": "steer cameras (pan, tilt, zoom) under their locks and priorities"}

CAMERA = arg("camera", help="camera id")
PURPOSE = arg("--purpose", help="why (an incident reference); recorded in the audit log")


def camera_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {"camera": args.camera, "purpose": getattr(args, "purpose", None)}


def move_fields(args: argparse.Namespace) -> dict[str, Any]:
    vector = {"pan": args.pan, "tilt": args.tilt, "zoom": args.zoom}
    return {**camera_fields(args), "kind": args.kind, "vector": vector, "timeout": args.timeout}


def goto_fields(args: argparse.Namespace) -> dict[str, Any]:
    if (args.preset is None) == (not args.home):
        raise CliError("ptz goto: give --preset TOKEN or --home", 2)
    return {**camera_fields(args), "preset": args.preset or "", "home": args.home}


def preset_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {**camera_fields(args), "name": args.name, "token": args.preset_token or ""}


def reserve_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {"camera": args.camera, "reason": args.reason, "seconds": args.seconds}


def onvif_password_local(args: argparse.Namespace) -> int:
    from gateway.ptz.facade import onvif_password
    from gateway.tenancy import Tenancy

    tenancy = Tenancy.open(load_config(args.config))
    try:
        principal = tenancy.policy.snapshot.principals.get(args.principal)
    finally:
        asyncio.run(tenancy.close())
    if principal is None or principal.digest_ha1 is None:
        raise CliError(f"no principal {args.principal!r} with a Digest password", 1)
    print(onvif_password(principal.digest_ha1))
    return 0


_MOVE = (
    CAMERA,
    arg("--kind", required=True, choices=("continuous", "relative", "absolute")),
    arg("--pan", type=float, default=0.0), arg("--tilt", type=float, default=0.0),
    arg("--zoom", type=float, default=0.0),
    arg("--timeout", type=float, help="continuous: seconds until the camera stops by itself"),
    PURPOSE,
)  # fmt: skip

VERBS: list[Verb] = [
    Verb("ptz", "move", "move a camera (takes its lock)",
         Rpc("PtzService", "Move", move_fields, shown()), _MOVE),
    Verb("ptz", "stop", "stop a camera's movement",
         Rpc("PtzService", "Stop", camera_fields, shown()), (CAMERA, PURPOSE)),
    Verb("ptz", "goto", "go to a preset or home",
         Rpc("PtzService", "Goto", goto_fields, shown()),
         (CAMERA, arg("--preset", help="preset token"), arg("--home", action="store_true"),
          PURPOSE)),
    Verb("ptz", "presets", "list a camera's presets",
         Rpc("PtzService", "GetPresets", camera_fields,
             listed("presets", ("token", "name", "position"))), (CAMERA,)),
    Verb("ptz", "preset", "save the current position as a preset",
         Rpc("PtzService", "SetPreset", preset_fields, shown()),
         (CAMERA, arg("--name", required=True), arg("--preset-token", help="overwrite this preset"),
          PURPOSE)),
    Verb("ptz", "status", "a camera's position and who holds it",
         Rpc("PtzService", "GetStatus", camera_fields, shown()), (CAMERA,)),
    Verb("ptz", "reserve", "reserve a camera for an incident (admins, the police)",
         Rpc("PtzService", "Reserve", reserve_fields, shown()),
         (CAMERA, arg("--reason", required=True), arg("--seconds", type=float, required=True))),
    Verb("ptz", "release", "let go of a lock or end a reservation",
         Rpc("PtzService", "Release", camera_fields, shown()), (CAMERA, PURPOSE)),
    Verb("ptz", "onvif-password", "a principal's password for feedgate's ONVIF facade",
         needs_local("ptz onvif-password works on the data dir: --local --config FILE"),
         (arg("principal", help="principal id (with a Digest password)"),),
         local=onvif_password_local),
]  # fmt: skip
