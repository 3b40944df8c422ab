"""The whole system in the production-like profile (`make run-prod`): every service on its own
PostgreSQL database, the audio encrypted in an S3 bucket on moto's server, the broker; driven over
HTTP with real speech, checked with the same assertions as the embedded profile.

One consultation only (the embedded profile's tests cover the rest), to keep the suite's time down.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest

from common.blobcrypto import Keyring, decrypt_bytes
from common.s3_server import local_s3_client
from tests.conftest import drop_postgres_databases
from tests.support.pipeline import check_upload_becomes_note
from tests.support.system import RunningSystem, start_system

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def database_prefix() -> str:
    return f"scribe_e2e_{uuid.uuid4().hex[:8]}_"


@pytest.fixture(scope="module")
def prod_system(postgres_admin_url, tmp_path_factory, model_dir, database_prefix) -> RunningSystem:
    running = start_system(
        tmp_path_factory.mktemp("prod-system"),
        model_dir,
        profile="prod",
        extra_env={"SCRIBE_POSTGRES_URL": postgres_admin_url, "SCRIBE_POSTGRES_DATABASE_PREFIX": database_prefix},
    )
    try:
        yield running
        code = running.stop()
        assert code == 0, running.logs("launcher")
        for component, info in running.state()["children"].items():
            with pytest.raises(ProcessLookupError):
                os.kill(info["pid"], 0)
    finally:
        if running.process.poll() is None:
            running.process.kill()
        dropped = asyncio.run(drop_postgres_databases(database_prefix))
        assert len(dropped) == 5, dropped


async def _count(admin_url: str, database: str, sql: str, *args) -> int:
    connection = await asyncpg.connect(admin_url.rsplit("/", 1)[0] + f"/{database}", timeout=5)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


def test_upload_becomes_note_on_postgres_and_encrypted_s3(
    prod_system, consultation_audio, postgres_admin_url, database_prefix
):
    state = prod_system.state()
    assert state["profile"] == "prod" and "s3" in state["children"]

    detail = check_upload_becomes_note(prod_system, consultation_audio["en"], "en")
    note_id = detail["id"]

    # Every service kept the note in its own PostgreSQL database, and none wrote a SQLite file.
    for database, table in [("ingestion", "uploads"), ("transcription", "transcription_jobs"),
                            ("notegen", "generations"), ("query", "notes")]:
        count = asyncio.run(_count(postgres_admin_url, f"{database_prefix}{database}",
                                   f"SELECT count(*) FROM {table} WHERE note_id = $1", note_id))
        assert count == 1, (database, count)
    assert asyncio.run(_count(postgres_admin_url, f"{database_prefix}gateway", "SELECT count(*) FROM api_keys")) >= 1
    assert not list(prod_system.data_dir.glob("*.db"))
    assert not (prod_system.data_dir / "blobs").exists()

    # The audio is one object in the bucket: ciphertext at rest, the exact upload once decrypted.
    client = local_s3_client(f"http://127.0.0.1:{state['children']['s3']['port']}")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="scribe-audio").get("Contents", [])]
    assert len(keys) == 1 and f"/{note_id}/" in keys[0], keys
    at_rest = client.get_object(Bucket="scribe-audio", Key=keys[0])["Body"].read()
    uploaded = consultation_audio["en"].read_bytes()
    assert at_rest != uploaded and at_rest[:4] == b"SCRB" and uploaded[:44] not in at_rest
    key_file = prod_system.data_dir / "run" / "blob_encryption_key"
    assert decrypt_bytes(at_rest, Keyring.from_text(key_file.read_text())) == uploaded
    # Nothing decrypted or staged is left on the local disk.
    staging = prod_system.data_dir / "staging"
    assert not staging.exists() or not list(staging.iterdir())
    for component in ("ingestion", "transcription", "gateway"):
        assert key_file.read_text().strip() not in prod_system.logs(component)
