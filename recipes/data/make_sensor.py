"""Writes sensor.csv: a generated two-sensor series with known anomalies, for recipes/sequence-sensor.yaml.

    python recipes/data/make_sensor.py [OUT.csv]

12,000 steps (read them as 10-minute readings: a day is 144 steps, a week 1,008) of a temperature and
an electrical load that follows it. Both have daily and weekly seasons and noise. Injected into the
last 30% only (the recipe's test part): spikes of one or two steps, level shifts, slow drifts that end
in a jump back, and a stuck sensor; `anomaly` is 1 on every step they touch. Seeded: the same file
every time (a test checks the shipped one).
"""

import sys

import numpy as np

STEPS = 12_000
DAY, WEEK = 144, 1_008
TEST_FROM = 8_400  # the last 30%


def clean_series(rng, steps=STEPS):
    t = np.arange(steps)
    day, week = 2 * np.pi * t / DAY, 2 * np.pi * t / WEEK
    temperature = 20 + 5 * np.sin(day) + 1.5 * np.sin(week) + rng.normal(0, 0.4, steps)
    load = 50 + 10 * np.sin(day - 0.8) + 4 * np.sin(week + 1.0) + 0.5 * (temperature - 20) + rng.normal(0, 1.2, steps)
    return temperature, load


def inject(rng, temperature, load):
    """Anomalies at fixed places of the test part; returns the step labels."""
    anomaly = np.zeros(len(temperature), dtype=np.int8)

    def mark(first, last):
        anomaly[first:last] = 1

    for at, width, column, size in [
        (8_650, 1, 0, 4.0),
        (9_020, 2, 1, -12.0),
        (9_700, 1, 1, 14.0),
        (10_480, 2, 0, -4.5),
    ]:
        (temperature, load)[column][at : at + width] += size  # spikes
        mark(at, at + width)
    for first, length, column, size in [(8_900, 120, 0, 3.0), (10_900, 150, 1, -10.0)]:
        (temperature, load)[column][first : first + length] += size  # level shifts
        mark(first, first + length)
    for first, length, column, size in [(9_300, 300, 0, 4.0), (11_300, 400, 1, 15.0)]:
        (temperature, load)[column][first : first + length] += np.linspace(0, size, length)  # drifts
        mark(first, first + length)
    first, length = 10_150, 100
    load[first : first + length] = load[first - 1]  # a stuck sensor repeats its last reading
    mark(first, first + length)
    return anomaly


def main(out):
    rng = np.random.default_rng(0)
    temperature, load = clean_series(rng)
    anomaly = inject(rng, temperature, load)
    with open(out, "w", newline="") as f:
        f.write("temperature,load,anomaly\n")
        for row in zip(temperature, load, anomaly, strict=True):
            f.write(f"{row[0]:.3f},{row[1]:.3f},{row[2]}\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/data/sensor.csv")
