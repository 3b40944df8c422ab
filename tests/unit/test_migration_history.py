"""Every database's Alembic history is one line: unique revision ids and a single head.

Two branches that each add a migration numbered after the same parent merge without a textual
conflict and leave two heads (or one id twice), and then no service starts (`upgrade head` fails).
This catches it before the services are started.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[2]
LOCATIONS = sorted(p.parent for p in ROOT.glob("*/migrations/env.py")) + sorted(
    p.parent for p in ROOT.glob("services/*/migrations/env.py")
)


@pytest.mark.parametrize("location", LOCATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_one_head_and_unique_revisions(location: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(location))
    script = ScriptDirectory.from_config(config)
    files = [p for p in (location / "versions").glob("*.py")]
    revisions = list(script.walk_revisions())
    assert script.get_heads() == [revisions[0].revision], script.get_heads()
    assert len(revisions) == len(files), "a revision id is used twice or a file is not a revision"
    assert revisions[-1].down_revision is None
