"""cancel_and_wait stops a task even when one cancellation is lost on the way."""

from __future__ import annotations

import asyncio

from stablegate.kit.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancel_is_cancelled_again() -> None:
    cancels_seen = 0

    async def swallows_the_first_cancel() -> None:
        nonlocal cancels_seen
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels_seen += 1  # what 3.11's wait_for does when the awaited event fires at once
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels_seen += 1
            raise

    task = asyncio.create_task(swallows_the_first_cancel())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, grace_s=0.05), timeout=5)
    assert task.cancelled()
    assert cancels_seen == 2


async def test_a_task_that_stops_gets_one_cancel_and_its_clean_up_runs_undisturbed() -> None:
    cleaned_up = asyncio.Event()

    async def slow_clean_up() -> str:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.1)  # not interrupted: well within the grace
            cleaned_up.set()
        return "unreachable"

    task = asyncio.create_task(slow_clean_up())
    await asyncio.sleep(0)
    await cancel_and_wait(task, grace_s=2)
    assert task.cancelled()
    assert cleaned_up.is_set()


async def test_a_finished_or_failed_task_is_left_as_it_is() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def answers() -> int:
        return 42

    failed, answered = asyncio.create_task(fails()), asyncio.create_task(answers())
    await asyncio.wait({failed, answered})
    await cancel_and_wait(failed)  # its exception is retrieved, not raised
    await cancel_and_wait(answered)
    assert answered.result() == 42
    assert isinstance(failed.exception(), RuntimeError)
