"""Copy's read-back: a point is saved only when its trees name indexed blobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprieve.engine.copy import verify_copied_tree
from reprieve.errors import DamageError
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.keys import Secret
from reprieve.vault.packs import BlobType
from reprieve.vault.repository import Vault
from reprieve.vault.tree import Node, NodeType, encode_tree
from reprieve.vault.writer import BlobWriter


def _tree_naming(vault: Vault, content: list[bytes]) -> bytes:
    leaf = Node(b"f", NodeType.FILE, 0o644, 0, 0, 1, 1, size=5, content=content)
    with BlobWriter(vault) as writer:
        sub = writer.add(encode_tree([leaf]), BlobType.TREE)
        root = writer.add(
            encode_tree([Node(b"d", NodeType.DIR, 0o755, 0, 0, 1, 1, subtree=sub)]),
            BlobType.TREE,
        )
        writer.flush()
    return root


def test_verify_accepts_trees_whose_blobs_are_indexed_and_refuses_others(
    tmp_path: Path,
) -> None:
    vault = Vault.create(LocalBackend(tmp_path / "v"), Secret.passphrase("x"), "", 8192)
    with BlobWriter(vault) as writer:
        present = writer.add(b"hello")
        writer.flush()
    verify_copied_tree(vault, _tree_naming(vault, [present]))

    absent = bytes(32)
    with pytest.raises(DamageError, match=absent.hex()[:12]):
        verify_copied_tree(vault, _tree_naming(vault, [present, absent]))
