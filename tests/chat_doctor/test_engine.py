"""The reply-signature engine (st-extension/src/reply-signatures.js) under Node's test runner, fed with
replies captured from the fake NanoGPT: 200 varied clean replies (role-play with colons included), half
streamed, half not, on chat and text completions, must raise no signature; each malformed shape must."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from tests.fakes import reply_shapes
from tests.fakes.nanogpt_fixtures import SUBSCRIBER_KEY, FakeNanoGPTServer
from tests.fakes.nanogpt_inference import Reply

HERE = Path(__file__).parent
NODE_TESTS = HERE / "reply_signatures.test.mjs"
DETECT = HERE / "detect_cli.mjs"


def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed")
    return binary


async def ask(
    session: ClientSession,
    server: FakeNanoGPTServer,
    base: str,
    *,
    kind: str,
    stream: bool,
    model: str,
    max_tokens: int = 300,
    roles: tuple[str, ...] = ("system", "user"),
) -> str:
    """One completion from the fake, as ST would read it: the content (streamed deltas joined)."""
    body: dict[str, Any] = {"model": model, "stream": stream, "max_tokens": max_tokens}
    if kind == "chat":
        body["messages"] = [{"role": role, "content": "Hello"} for role in roles]
        path = "chat/completions"
    else:
        body["prompt"] = "Hello"
        path = "completions"
    url = f"{server.base_url}/{base}/{path}"
    headers = {"Authorization": f"Bearer {SUBSCRIBER_KEY}"}
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        if not stream:
            data = await response.json()
            choice = data["choices"][0]
            return str(choice["message"]["content"] if kind == "chat" else choice["text"])
        text = ""
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = orjson.loads(line[6:])["choices"][0]
            text += (choice["delta"].get("content") or "") if kind == "chat" else choice["text"]
        return text


async def test_200_clean_replies_from_the_fake_raise_no_signature(
    fake_nanogpt: FakeNanoGPTServer, tmp_path: Path
) -> None:
    corpus = reply_shapes.clean_replies(200)
    queue = list(corpus)
    fake_nanogpt.fake.inference.default = lambda model, base: Reply(queue.pop(0))
    model = fake_nanogpt.fake.ids("v1")[0]
    captured: list[str] = []
    async with ClientSession() as session:
        for index in range(len(corpus)):
            kind = "chat" if index % 4 < 3 else "text"
            stream = index % 2 == 0
            captured.append(await ask(session, fake_nanogpt, "v1", kind=kind, stream=stream, model=model))
    assert captured == corpus  # the fake delivered each reply intact, streamed or not
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps(captured))
    result = await asyncio.to_thread(
        subprocess.run,
        [node(), "--test", str(NODE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"REPLIES_FILE": str(replies), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# skipped 0" in result.stdout
    assert "# clean replies checked: 200" in result.stdout


async def test_each_malformed_shape_from_the_fake_shows_its_signature(
    fake_nanogpt: FakeNanoGPTServer,
) -> None:
    inference = fake_nanogpt.fake.inference
    model = fake_nanogpt.fake.ids("v1")[0]
    inference.default = lambda model, base: Reply("Hello, traveller.", reasoning="They greet me.")
    got: dict[str, list[str]] = {}
    async with ClientSession() as session:

        async def one(base: str, kind: str, stream: bool, roles: tuple[str, ...] = ("system", "user")) -> str:
            return await ask(session, fake_nanogpt, base, kind=kind, stream=stream, model=model, roles=roles)

        for stream in (False, True):
            # NanoGPT's v1thinking folds reasoning into the text by itself.
            got[f"v1thinking/{stream}"] = [await one("v1thinking", "chat", stream)]
            inference.shape = reply_shapes.think_in_content
            got[f"think/{stream}"] = [await one("v1", "chat", stream)]
            inference.shape = reply_shapes.speaks_for_user("User")
            got[f"speaks/{stream}"] = [await one("v1", "chat", stream)]
            two_systems = ("system", "system", "user")
            got[f"speaks-repeat/{stream}"] = [await one("v1", "chat", stream, two_systems)]
            inference.shape = reply_shapes.roles_must_alternate
            got[f"alternate/{stream}"] = [await one("v1", "chat", stream)]
            inference.shape = reply_shapes.empty_over_output_limit(100)
            got[f"empty/{stream}"] = [await one("v1", "chat", stream)]
            inference.shape = reply_shapes.cut_off_at_max_tokens
            got[f"cut/{stream}"] = [await one("v1", "text", stream)]
            inference.shape = None
    detected = await asyncio.to_thread(detect, {key: texts[0] for key, texts in got.items()}, max_tokens=300)
    for stream in ("False", "True"):
        assert detected[f"v1thinking/{stream}"] == ["reasoning_as_text"]
        assert detected[f"think/{stream}"] == ["reasoning_as_text"]
        # The request had system then user: no two in a row, so the shape answers clean.
        assert detected[f"speaks/{stream}"] == []
        assert detected[f"speaks-repeat/{stream}"] == ["speaks_for_user"]
        assert detected[f"alternate/{stream}"] == []  # system then user alternates: no refusal
        assert detected[f"empty/{stream}"] == ["empty_reply"]
        assert detected[f"cut/{stream}"] == ["cut_off"]


def detect(texts: dict[str, str], *, max_tokens: int) -> dict[str, list[str]]:
    """Runs the engine on each text (token count: words, as the fake counts them)."""
    result = subprocess.run(
        [node(), str(DETECT)],
        input=json.dumps({"texts": texts, "maxTokens": max_tokens}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, list[str]] = json.loads(result.stdout)
    return data


async def test_roles_must_alternate_shape_refuses_only_a_non_alternating_prompt(
    fake_nanogpt: FakeNanoGPTServer,
) -> None:
    fake_nanogpt.fake.inference.shape = reply_shapes.roles_must_alternate
    model = fake_nanogpt.fake.ids("v1")[0]
    url = f"{fake_nanogpt.base_url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {SUBSCRIBER_KEY}"}
    async with ClientSession() as session:
        for roles, status in ((("system", "assistant", "assistant", "user"), 400), (("system", "user"), 200)):
            body = {"model": model, "messages": [{"role": r, "content": "x"} for r in roles]}
            async with session.post(url, json=body, headers=headers) as response:
                assert response.status == status
                if status == 400:
                    assert "roles must alternate" in (await response.json())["error"]["message"]
