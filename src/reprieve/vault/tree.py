"""Trees: one blob per directory, listing its entries.

A tree blob (type TREE) is msgpack ``{"v": 1, "nodes": [node, …]}`` with the
nodes sorted by name. Each node is a map with short keys; names, symlink
targets and hard-link paths are raw bytes, so any file name the operating
system allows (newlines, invalid UTF-8) survives. Encoding is deterministic:
an unchanged directory encodes to the same bytes and so the same blob id,
which lets an unchanged subtree cost nothing in a new point.

Node keys: ``n`` name, ``t`` type, ``m`` permission bits, ``u``/``g`` owner
ids, ``mt``/``ct`` mtime and ctime in ns, ``s`` size, ``i``/``d``
inode and device (change detection and hard links), ``c`` content blob ids,
``sub`` subtree id, ``l`` symlink target, ``r`` device number, ``h`` path of
the first hard link to the same inode in this point, ``sp`` sparse.

Access times are not recorded (as borg does by default): reading a file
moves its atime, and recording it would rewrite every tree blob whose files
were read since the last backup. Restore sets atime to mtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from reprieve.errors import DamageError


class NodeType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"
    CHARDEV = "chardev"
    BLOCKDEV = "blockdev"


@dataclass(slots=True)
class Node:
    name: bytes
    type: NodeType
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    size: int = 0
    inode: int = 0
    dev: int = 0
    content: list[bytes] = field(default_factory=list)
    subtree: bytes | None = None
    target: bytes | None = None
    rdev: int = 0
    hardlink: bytes | None = None
    sparse: bool = False

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.name,
            "t": str(self.type),
            "m": self.mode,
            "u": self.uid,
            "g": self.gid,
            "mt": self.mtime_ns,
            "ct": self.ctime_ns,
            "s": self.size,
            "i": self.inode,
            "d": self.dev,
        }
        if self.content:
            out["c"] = self.content
        if self.subtree is not None:
            out["sub"] = self.subtree
        if self.target is not None:
            out["l"] = self.target
        if self.rdev:
            out["r"] = self.rdev
        if self.hardlink is not None:
            out["h"] = self.hardlink
        if self.sparse:
            out["sp"] = True
        return out

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Node:
        return cls(
            name=m["n"],
            type=NodeType(m["t"]),
            mode=m["m"],
            uid=m["u"],
            gid=m["g"],
            mtime_ns=m["mt"],
            ctime_ns=m["ct"],
            size=m["s"],
            inode=m["i"],
            dev=m["d"],
            content=list(m.get("c", [])),
            subtree=m.get("sub"),
            target=m.get("l"),
            rdev=m.get("r", 0),
            hardlink=m.get("h"),
            sparse=m.get("sp", False),
        )


def encode_tree(nodes: list[Node]) -> bytes:
    ordered = sorted(nodes, key=lambda n: n.name)
    return bytes(msgpack.packb({"v": 1, "nodes": [n.to_map() for n in ordered]}))


def decode_tree(data: bytes, what: str) -> list[Node]:
    try:
        body = msgpack.unpackb(data)
        return [Node.from_map(m) for m in body["nodes"]]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise DamageError(f"{what} is unreadable") from exc


def tree_links(data: bytes, what: str) -> tuple[list[bytes], list[bytes]]:
    """The subtree ids and the content blob ids a tree names, in node order.

    For walks that follow a tree's links and need nothing else of its nodes
    (a copy's listing of what to carry, its read-back): no nodes are built.
    """
    try:
        nodes = msgpack.unpackb(data)["nodes"]
        subtrees = [m["sub"] for m in nodes if "sub" in m]
        content = [blob for m in nodes for blob in m.get("c", ())]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise DamageError(f"{what} is unreadable") from exc
    return subtrees, content
