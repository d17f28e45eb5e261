"""The (workspace, actor) population and the rollout gate: the relay's buckets, send weights, bulk gating."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from loadsim.rollout.population import Gate, Population, bucket_of


def relay_bucket(key: str) -> int:
    """The relay's formula, written out again here."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100 + 1


SKEWED = Population(workspaces=20, actors=50, skew=1.2, seed=7)


class TestPopulation:
    def test_keys_with_workspaces(self) -> None:
        p = Population(workspaces=2, actors=3)
        assert p.keys == (
            "ws-0:actor-0",
            "ws-0:actor-1",
            "ws-0:actor-2",
            "ws-1:actor-0",
            "ws-1:actor-1",
            "ws-1:actor-2",
        )
        assert len(p) == 6

    def test_keys_without_workspaces(self) -> None:
        """No workspace: the relay keys on the actor id alone."""
        assert Population(workspaces=0, actors=3).keys == ("actor-0", "actor-1", "actor-2")

    def test_buckets_match_the_relays_formula(self) -> None:
        p = Population(workspaces=4, actors=25)
        assert p.buckets.tolist() == [relay_bucket(k) for k in p.keys]
        assert [bucket_of(k) for k in ("actor-0", "ws-0:actor-0", "ws-3:actor-7")] == [84, 66, 49]
        assert p.buckets.min() >= 1
        assert p.buckets.max() <= 100

    def test_uniform_weights(self) -> None:
        p = Population(workspaces=3, actors=4, skew=0.0)
        assert np.array_equal(p.weights, np.full(12, 1 / 12))

    def test_zipf_weights(self) -> None:
        """Rank r weighs r**-skew; sorted, the weights are the normalised Zipf law."""
        p = Population(workspaces=0, actors=100, skew=1.0, seed=3)
        zipf = 1 / np.arange(1, 101)
        assert np.allclose(np.sort(p.weights)[::-1], zipf / zipf.sum(), rtol=1e-12, atol=0)
        assert math.isclose(p.weights.sum(), 1.0, rel_tol=1e-12)

    def test_seed_shuffles_heavy_senders(self) -> None:
        """Same seed, same weights; another seed puts the heaviest sender elsewhere; keys do not move."""
        a, b, c = (Population(0, 1000, skew=1.0, seed=s) for s in (1, 1, 2))
        assert np.array_equal(a.weights, b.weights)
        assert int(np.argmax(a.weights)) != int(np.argmax(c.weights))
        assert a.keys == c.keys
        assert np.array_equal(a.buckets, c.buckets)

    @pytest.mark.parametrize("percent", range(101))
    def test_gated_share_is_the_weight_above_the_percent(self, percent: int) -> None:
        expected = math.fsum(
            w for w, b in zip(SKEWED.weights.tolist(), SKEWED.buckets.tolist(), strict=True) if b > percent
        )
        assert SKEWED.gated_share(percent) == pytest.approx(expected, abs=1e-12)
        assert np.array_equal(SKEWED.allowed(percent), [b <= percent for b in SKEWED.buckets.tolist()])

    def test_gated_share_ends(self) -> None:
        assert SKEWED.gated_share(0) == pytest.approx(1.0, abs=1e-12)
        assert SKEWED.gated_share(100) == 0.0

    def test_one_heavy_sender_decides_the_share(self) -> None:
        """With a steep skew the gated share is nowhere near 100 - percent: it is the heavy pairs' buckets."""
        p = Population(workspaces=0, actors=50, skew=3.0, seed=0)
        heaviest = int(np.argmax(p.weights))
        b = int(p.buckets[heaviest])
        assert p.weights[heaviest] > 0.8
        assert p.gated_share(b - 1) - p.gated_share(b) >= p.weights[heaviest] - 1e-12

    def test_bad_values_are_all_named(self) -> None:
        with pytest.raises(ValueError, match="population: ") as err:
            Population(workspaces=-1, actors=0, skew=-0.5, seed=-2)
        assert str(err.value) == (
            "population: workspaces: must be an int >= 0 (0 for no workspace), got -1; "
            "actors: must be an int >= 1 (a population with no actor sends nothing), got 0; "
            "skew: must be a finite number >= 0 (0 for uniform senders), got -0.5; "
            "seed: must be an int >= 0, got -2"
        )

    def test_empty_population_is_refused(self) -> None:
        with pytest.raises(ValueError, match="actors: must be an int >= 1"):
            Population(workspaces=5, actors=0)


class TestGate:
    @pytest.mark.parametrize("percent", [10, 50])
    def test_gated_share_of_many_sends(self, percent: int) -> None:
        """Over 1e6 sends the gated fraction is the population's gated share, within 5 binomial sigmas."""
        n = 1_000_000
        share = SKEWED.gated_share(percent)
        gated = Gate(SKEWED).gated(np.random.default_rng(42), n, percent)
        assert gated.shape == (n,)
        assert gated.dtype == np.bool_
        assert abs(gated.mean() - share) <= 5 * math.sqrt(share * (1 - share) / n)

    def test_gate_is_the_drawn_pairs_bucket(self) -> None:
        """Same generator state: ``gated`` agrees send for send with the buckets of the pairs ``draw`` picks."""
        gate = Gate(SKEWED)
        for percent in (1, 10, 37, 50, 99):
            pairs = gate.draw(np.random.default_rng(5), 200_000)
            gated = gate.gated(np.random.default_rng(5), 200_000, percent)
            assert np.array_equal(gated, SKEWED.buckets[pairs] > percent)

    def test_draw_follows_the_weights(self) -> None:
        """Pairs are drawn by send weight: the heaviest pair's share of 1e6 draws is its weight."""
        n = 1_000_000
        pairs = Gate(SKEWED).draw(np.random.default_rng(9), n)
        heaviest = int(np.argmax(SKEWED.weights))
        w = float(SKEWED.weights[heaviest])
        assert abs(np.count_nonzero(pairs == heaviest) / n - w) <= 5 * math.sqrt(w * (1 - w) / n)

    @pytest.mark.parametrize(("percent", "all_gated"), [(0, True), (-5, True), (100, False), (150, False)])
    def test_no_draws_at_the_ends(self, percent: int, all_gated: bool) -> None:
        """At 0 (or below) every send is gated, at 100 (or above) none, and the generator is not touched."""
        rng = np.random.default_rng(1)
        before = rng.bit_generator.state
        gated = Gate(SKEWED).gated(rng, 1000, percent)
        assert rng.bit_generator.state == before
        assert gated.tolist() == [all_gated] * 1000

    def test_every_pair_allowed_below_100(self) -> None:
        """A percent at or above every bucket gates nothing, even though it is under 100."""
        p = Population(workspaces=0, actors=3)
        top = int(p.buckets.max())
        assert not Gate(p).gated(np.random.default_rng(0), 10_000, top).any()
        assert Gate(p).gated(np.random.default_rng(0), 10_000, top - 1).any()

    def test_same_seed_same_gates(self) -> None:
        gate = Gate(SKEWED)
        a = gate.gated(np.random.default_rng(11), 10_000, 50)
        b = gate.gated(np.random.default_rng(11), 10_000, 50)
        assert np.array_equal(a, b)
