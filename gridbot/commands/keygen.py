"""``keygen``: a fresh ED25519 key pair for Backpack, printed."""
from __future__ import annotations

import argparse
import json

from backpack_api import generate_keypair
from gridbot.core.errors import EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    api_key, secret = generate_keypair()
    if args.json:
        print(json.dumps({"api_key": api_key, "api_secret": secret}))
    else:
        print(f"BACKPACK_API_KEY={api_key}")
        print(f"BACKPACK_API_SECRET={secret}")
    return EXIT_OK
