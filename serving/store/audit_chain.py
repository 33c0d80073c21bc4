"""Verifying the audit chain against its anchors, and anchoring the head of a verified chain.

:func:`verify_audit` walks the store's hash chain (:meth:`serving.store.database.Store.audit_chain_links`) and checks
it against every anchor of the anchor file (:mod:`serving.store.audit_anchor`): a row changed, inserted or removed
and the chain recomputed (an anchored ``row_hash`` differs), the newest rows deleted (the store ends before an
anchored seq), or a forged or malformed anchor line is reported in a :class:`ChainReport`, which holds seqs, counts
and reasons, never a row's content. :func:`anchor_head` anchors the head of a chain that verifies (``vigil audit
anchor``, for a site turning anchoring on over an existing trail).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.errors import ConfigError
from serving.store.audit_anchor import AnchorFile

if TYPE_CHECKING:
    from serving.store.audit_anchor import AuditAnchor
    from serving.store.database import Store

__all__ = ["ChainReport", "anchor_head", "verify_audit"]


@dataclass(frozen=True)
class ChainReport:
    """The outcome of :func:`verify_audit`; holds seqs, counts and reasons, never a row's content.

    Attributes
    ----------
    ok : bool
        The chain holds, and agrees with every anchor.
    rows : int
        Rows checked and found intact (all of them when ``ok``).
    broken_seq : int or None
        The first seq at which the chain, or its agreement with the anchors, fails.
    problems : tuple of str
        Why it is not ok (empty when ok).
    anchor_path : str or None
        The anchor file checked; None when no anchor was configured.
    anchors : int
        Valid anchor lines read.
    newest_anchor_seq : int or None
        The highest anchored seq.
    unanchored_rows : int
        Intact rows after the newest anchor: written since it, or left by a process killed between its commit and
        its anchor. Not an error, but these rows could be deleted unnoticed until the next anchor.
    """

    ok: bool
    rows: int
    broken_seq: int | None
    problems: tuple[str, ...]
    anchor_path: str | None
    anchors: int
    newest_anchor_seq: int | None
    unanchored_rows: int

    def summary(self) -> str:
        """One line for a person: intact or where it broke."""
        if not self.ok:
            where = f" at seq {self.broken_seq}" if self.broken_seq is not None else ""
            return f"AUDIT CHAIN BROKEN{where}: " + "; ".join(self.problems)
        if self.anchor_path is None:
            return (
                f"audit chain intact: {self.rows} rows (hash chain only: VIGIL_AUDIT_ANCHOR_PATH is not set, so "
                "deleted newest rows or a recomputed chain would not be detected)"
            )
        tail = f"; {self.unanchored_rows} newer rows not anchored yet" if self.unanchored_rows else ""
        return (
            f"audit chain intact: {self.rows} rows, matching {self.anchors} anchors in {self.anchor_path} "
            f"(newest seq {self.newest_anchor_seq}){tail}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "broken_seq": self.broken_seq,
            "problems": list(self.problems),
            "anchor_path": self.anchor_path,
            "anchors": self.anchors,
            "newest_anchor_seq": self.newest_anchor_seq,
            "unanchored_rows": self.unanchored_rows,
        }


def verify_audit(store: Store, anchor: AuditAnchor | None = None) -> ChainReport:
    """Walk the audit chain of ``store`` and check it against every anchor of ``anchor``.

    The anchors are read first, then the chain (a service writing meanwhile only adds rows after them). The
    chain fails at the first row that is missing, does not link, or does not hash to its ``row_hash``; with an
    anchor it also fails where a row's ``row_hash`` differs from its anchor (a row at or before it was changed
    and the chain recomputed), when the store ends before the newest anchor (the newest rows were deleted), when
    the anchor file holds a line that is not a valid anchor of this key, and when the anchor file is missing or
    empty although the store holds rows.

    Parameters
    ----------
    store : Store
        The store to check; only read.
    anchor : AuditAnchor, optional
        The anchor file and key (:func:`serving.store.audit_anchor.open_anchor`); None checks the hash chain alone.

    Returns
    -------
    ChainReport

    Raises
    ------
    StoreUnavailableError
        The store cannot be read (including: its schema was never created).
    """
    return _verify(store, anchor, require_anchor=True)[0]


def anchor_head(store: Store, anchor: AuditAnchor) -> ChainReport:
    """Verify the chain against ``anchor``, then anchor its head; nothing is anchored unless it verifies.

    For a site turning anchoring on over an existing trail (every later write anchors itself): as
    :func:`verify_audit`, except that an anchor file without anchors is accepted. An empty trail gets no anchor.

    Returns
    -------
    ChainReport
        The verification; when ok, the head is anchored (``newest_anchor_seq == rows``).

    Raises
    ------
    StoreUnavailableError
        The store cannot be read.
    ConfigError
        The anchor could not be written (the path is in the message; the reason in the log).
    """
    report, head = _verify(store, anchor, require_anchor=False)
    if not report.ok or head is None or report.newest_anchor_seq == report.rows:
        return report
    if not anchor.append(report.rows, head):
        raise ConfigError(f"the audit anchor could not be written to {anchor.path} (the log says why)")
    return ChainReport(
        ok=True,
        rows=report.rows,
        broken_seq=None,
        problems=(),
        anchor_path=report.anchor_path,
        anchors=report.anchors + 1,
        newest_anchor_seq=report.rows,
        unanchored_rows=0,
    )


def _verify(store: Store, anchor: AuditAnchor | None, *, require_anchor: bool) -> tuple[ChainReport, str | None]:
    """:func:`verify_audit`, and the ``row_hash`` of the last intact row (None for an empty trail)."""
    found = anchor.read() if anchor is not None else AnchorFile(anchors={}, exists=False)
    anchors = found.anchors
    problems = [found.problem] if found.problem else []
    rows, head, broken, last_matching = 0, None, None, 0
    for seq, row_hash, problem in store.audit_chain_links():
        if problem is not None:
            broken = seq
            problems.insert(0, f"seq {seq}: {problem}")
            break
        anchored = anchors.get(seq)
        if anchored is not None:
            if not hmac.compare_digest(anchored, bytes.fromhex(row_hash)):
                broken = seq
                span = f"seq {seq}" if last_matching + 1 == seq else f"one of seq {last_matching + 1}..{seq}"
                problems.insert(
                    0,
                    f"seq {seq} differs from its anchor: {span} was changed, inserted or removed "
                    "and the chain recomputed",
                )
                break
            last_matching = seq
        rows, head = seq, row_hash
    newest = max(anchors, default=None)
    if broken is None and newest is not None and newest > rows:
        broken = rows + 1
        lost = f"row {newest} was" if newest == rows + 1 else f"rows {rows + 1}..{newest} were"
        problems.insert(0, f"the store ends at seq {rows} but seq {newest} was anchored: {lost} deleted")
    if require_anchor and anchor is not None and not anchors and rows and not problems:
        state = "does not exist" if not found.exists else "holds no anchor"
        problems.append(
            f"the anchor file {anchor.path} {state} although the store holds {rows} rows (if anchoring "
            "was just turned on, run `vigil audit anchor` once)"
        )
    unanchored = rows - newest if newest is not None and broken is None else 0
    report = ChainReport(
        ok=not problems,
        rows=rows,
        broken_seq=broken,
        problems=tuple(problems),
        anchor_path=str(anchor.path) if anchor is not None else None,
        anchors=len(anchors),
        newest_anchor_seq=newest,
        unanchored_rows=max(0, unanchored),
    )
    return report, head
