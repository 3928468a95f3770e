"""Encryption of stored secrets (node agents' secrets) with Fernet (`cryptography`).

The key comes from `ZLH_NODE_SECRET_KEY` (a Fernet key, `Fernet.generate_key()`), else from the
file `ZLH_NODE_SECRET_KEY_FILE` (default `ZLH_DATA_DIR/node-secrets.key`), which is made on first
use with mode 0600. The log holds ciphertext only; losing the key means adding the nodes again.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBoxError(Exception):
    """A stored secret cannot be decrypted with this key."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def __repr__(self) -> str:
        return "SecretBox(...)"

    @classmethod
    def from_settings(cls, key: str | None, key_file: str | None, data_dir: str) -> SecretBox:
        if key:
            return cls(key.encode())
        path = Path(key_file) if key_file else Path(data_dir) / "node-secrets.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it meanwhile
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretBoxError("a stored node secret does not decrypt with this key") from exc
