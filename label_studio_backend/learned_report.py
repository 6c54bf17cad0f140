"""``simages-ls labels --project ID``: what annotators taught the backend, read from the same store it uses."""

from __future__ import annotations

import json
import sys

from simages_core import SharedStoreUnavailable

from .learned_labels import Evidence
from .learned_store import LearnedStoreError, open_learned_store
from .settings import BackendSettings

SHOWN_SIGNALS = 8
"""Per label, the strongest signals printed (``--json`` has them all)."""


def evidence_document(project: int, evidence: Evidence, where: str) -> dict:
    """The evidence as plain JSON: per control and label, each signal's count and association."""
    controls = {}
    for name, control in sorted(evidence.controls.items()):
        controls[name] = {
            label: {
                "annotations": total,
                "signals": [
                    {
                        "signal": signal,
                        "with_label": count,
                        "seen": control.signals.get(signal, 0),
                        "association": round(p, 4),
                    }
                    for signal, count, p in control.classes_of(label)
                ],
            }
            for label, total in sorted(control.labels.items())
        }
    return {
        "project": project,
        "annotations": evidence.annotations,
        "generation": evidence.generation,
        "store": where,
        "controls": controls,
    }


def format_evidence(document: dict) -> str:
    lines = [
        f"project {document['project']}: {document['annotations']} annotations learned from, "
        f"generation {document['generation']} ({document['store']})"
    ]
    if not document["controls"]:
        lines.append("  nothing learned yet: submit annotations in Label Studio with the backend connected")
    for control, labels in document["controls"].items():
        lines.append(f"  {control}:")
        for label, row in labels.items():
            shown = ", ".join(
                f"{s['signal']} {s['with_label']}/{s['seen']} ({s['association']:.2f})"
                for s in row["signals"][:SHOWN_SIGNALS]
            )
            more = len(row["signals"]) - SHOWN_SIGNALS
            lines.append(
                f"    {label}: {row['annotations']} annotations; {shown or 'no signal yet'}"
                + (f", +{more} more" if more > 0 else "")
            )
    return "\n".join(lines)


def print_learned(project: int, settings: BackendSettings, *, as_json: bool) -> int:
    from .context import redactor_for

    redact = redactor_for(settings)
    try:
        store = open_learned_store(settings.simages_home, settings.learn_every)
    except (SharedStoreUnavailable, LearnedStoreError, ValueError) as exc:
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 2
    try:
        document = evidence_document(project, store.evidence(project), store.where)
    except LearnedStoreError as exc:
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(document, indent=2) if as_json else format_evidence(document))
    return 0
