"""``simages-ls labels --project ID``: what annotators taught the backend, read from the same store it uses.

Learned state is kept per Label Studio project uid (``ID.CREATED``, ``context.project_key``). A bare
``ID`` shows the one uid stored for it; when two Label Studio instances both taught a project with
that id, it lists their uids and asks for one.
"""

from __future__ import annotations

import json
import sys

from simages_core import SharedStoreUnavailable

from .learned_labels import Evidence
from .learned_store import LearnedStore, LearnedStoreError, open_learned_store
from .settings import BackendSettings

SHOWN_SIGNALS = 8
"""Per label, the strongest signals printed (``--json`` has them all)."""


def evidence_document(project: str, evidence: Evidence, where: str) -> dict:
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


def _resolve(project: str, store: LearnedStore) -> str | list[str]:
    """The stored key ``project`` names, or every candidate when a bare id is ambiguous."""
    if "." in project:
        return project
    found = store.projects(int(project))
    if len(found) > 1:
        return found
    return found[0] if found else project


def print_learned(project: str, settings: BackendSettings, *, as_json: bool) -> int:
    from .context import redactor_for

    redact = redactor_for(settings)
    try:
        store = open_learned_store(settings.simages_home, settings.learn_every)
    except (SharedStoreUnavailable, LearnedStoreError, ValueError) as exc:
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 2
    try:
        key = _resolve(project, store)
        if isinstance(key, list):
            print(
                f"simages-ls: project {project} was taught by {len(key)} Label Studio instances; "
                f"name one: {', '.join('--project ' + k for k in key)}",
                file=sys.stderr,
            )
            return 2
        document = evidence_document(key, store.evidence(key), store.where)
    except LearnedStoreError as exc:
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(document, indent=2) if as_json else format_evidence(document))
    return 0
