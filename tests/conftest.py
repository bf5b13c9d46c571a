from __future__ import annotations

from decimal import Decimal
from typing import Iterator

import pytest

from simulator import SimControl, Simulator, running_simulator
from tests.helpers import end_started_processes


@pytest.fixture(autouse=True)
def _end_processes() -> Iterator[None]:
    """Whatever happens in a test, no process it started outlives it."""
    yield
    end_started_processes()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A quiet simulator on 127.0.0.1:0: the price moves only when a test says so."""
    with running_simulator(feed="none", ticker_interval=0.1) as s:
        yield s


@pytest.fixture
def quiet_sim() -> Iterator[Simulator]:
    """A quiet simulator for the bot's end-to-end tests: SOL_USDC at 149.5, tickers every 0.1 s."""
    with running_simulator(feed="none", ticker_interval=0.1, price=Decimal("149.5")) as s:
        yield s


@pytest.fixture
def exact_sim() -> Iterator[Simulator]:
    """The exact-funding tier's simulator: no maker fee and a taker fee above it (0.1%), SOL_USDC at 149.5;
    each test funds its account with exactly what ``plan`` says."""
    with running_simulator(feed="none", ticker_interval=0.1, price=Decimal("149.5"), maker_fee=Decimal(0),
                           taker_fee=Decimal("0.001")) as s:
        yield s


@pytest.fixture
def control(sim: Simulator) -> SimControl:
    return SimControl(sim.rest_url)


@pytest.fixture
def perp_sim() -> Iterator[Simulator]:
    """The perps grid's tier: SOL_USDC_PERP at 150, Backpack's tier-1 futures fees (maker 0.02 %, taker 0.05 %)."""
    with running_simulator(feed="none", ticker_interval=0.1, maker_fee=Decimal("0.0002"),
                           taker_fee=Decimal("0.0005")) as s:
        SimControl(s.rest_url).set_price("150", symbol="SOL_USDC_PERP")
        yield s
