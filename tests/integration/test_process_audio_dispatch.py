"""Seed 004's 500: when process_audio_v2 cannot dispatch its task, the answer is 500 in the error
envelope and nothing is half-created (real ingestion and query on the real broker)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common.broker import free_port
from tests.support.audio import write_tone
from tests.support.gateway import TEST_API_KEY, gateway_backends, gateway_settings, running_gateway

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
DISPATCH_FAILED = {
    "error": "internal_error",
    "message": "The audio processing task could not be dispatched; nothing was started",
    "code": "TASK_DISPATCH_FAILED",
    "details": {},
}


async def test_dispatch_failure_is_500_and_creates_nothing(tmp_path: Path, broker: str):
    tone = write_tone(tmp_path / "tone.wav", seconds=1).read_bytes()
    async with gateway_backends(tmp_path / "backends", broker) as addresses:
        async with running_gateway(gateway_settings(tmp_path / "gw", addresses)) as (_, client):
            stored = await client.post("/upload_audio/12345", headers=AUTH, files={"file": ("a.wav", tone, "audio/wav")})
            assert stored.status_code == 201, stored.text
            file_id = stored.json()["file_id"]
            # Ingestion's database refuses the write: the note and its event must go together.
            database = tmp_path / "backends" / "ingestion" / "ingestion.db"
            with sqlite3.connect(database) as connection:
                connection.execute("ALTER TABLE outbox RENAME TO outbox_unavailable")
            try:
                response = await client.post("/process_audio_v2/12345", headers=AUTH, params={"file_id": file_id})
                assert response.status_code == 500, response.text
                assert response.json() == DISPATCH_FAILED
                with sqlite3.connect(database) as connection:
                    assert connection.execute("SELECT count(*) FROM uploads").fetchone() == (0,)
            finally:
                with sqlite3.connect(database) as connection:
                    connection.execute("ALTER TABLE outbox_unavailable RENAME TO outbox")
            started = await client.post("/process_audio_v2/12345", headers=AUTH, params={"file_id": file_id})
            assert started.status_code == 200, started.text

        # Ingestion unreachable: the same 500.
        down = {**addresses, "ingestion": f"127.0.0.1:{free_port()}"}
        async with running_gateway(gateway_settings(tmp_path / "gw2", down)) as (_, client):
            response = await client.post("/process_audio_v2/12345", headers=AUTH, params={"file_id": file_id})
            assert response.status_code == 500 and response.json() == DISPATCH_FAILED
