#!/usr/bin/env python3
"""The most a client could get in the quota benchmark's `max-tokens-trap` scenario, simulated.

The client knows Bedrock's bucket exactly and admits a record the moment the bucket holds its reservation
(input + max_tokens); nothing is ever throttled. The scenario's own rules (benches/quota.rs, the emulator's
quota model): 400,000 tokens a minute, the bucket empty at the first request, a reservation of 29 + 4,096
tokens held while the call runs, then settled at input + 5 x output (output 180-220 tokens), latency
200 ms + 2 ms a token with +-20 % jitter. Admitting as early as possible is the best any schedule of alike
records can do: each admission of this one is no later than the same admission of any other schedule.

    python3 benches/clairvoyant.py [SECONDS...]
"""
import heapq
import random
import sys

TPM = 400_000
INPUT = 29
MAX_TOKENS = 4096
BURNDOWN = 5
LIMIT_RPM = 388.8  # the benchmark's limit for the scenario: the quota over the mean charge


def answered_by(seconds, seed=1, step=0.0005):
    rng = random.Random(seed)
    refill = TPM / 60.0
    reservation = INPUT + MAX_TOKENS
    level, t, done = 0.0, 0.0, 0
    in_flight = []  # (settles at, refund)
    while t < seconds:
        level = min(TPM, level + refill * step)
        while in_flight and in_flight[0][0] <= t:
            _, refund = heapq.heappop(in_flight)
            level += refund
            done += 1
        while level >= reservation:
            output = rng.randint(180, 220)
            latency = (0.2 + 0.002 * output) * rng.uniform(0.8, 1.2)
            level -= reservation
            heapq.heappush(in_flight, (t + latency, reservation - (INPUT + BURNDOWN * output)))
        t += step
    return done


if __name__ == "__main__":
    for seconds in [float(s) for s in sys.argv[1:]] or [30.0, 60.0]:
        runs = [answered_by(seconds, seed) for seed in range(1, 6)]
        best = max(runs)
        print(
            f"{seconds:.0f} s: {min(runs)}-{best} records answered over 5 draws; "
            f"goodput {min(runs) / (LIMIT_RPM / 60 * seconds):.3f}-{best / (LIMIT_RPM / 60 * seconds):.3f}"
        )
