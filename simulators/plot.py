"""Accelerated run of the plant model, plotted: 30 days of loads, weather, PUE, and a year by month.

    python -m dcim.simulators.plot --days 30 --start 2026-07-01 --out docs/img/plant-30d.png
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402  (after choosing the Agg backend)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from dcim.simulators.plant import PlantHistory, PlantModel  # noqa: E402
from dcim.site import load_site  # noqa: E402

Array = NDArray[np.float64]


def monthly_pue(site_file: str, year: int, seed: int, step_s: float) -> tuple[Array, Array, Array]:
    """Energy-weighted PUE per month of a year, with the min and max of the instantaneous PUE."""
    tz = ZoneInfo(load_site(site_file).config.site.timezone)
    edges = [datetime(year + m // 12, m % 12 + 1, 1, tzinfo=tz).timestamp() for m in range(13)]
    h = PlantModel(load_site(site_file), seed=seed).history(edges[0], edges[-1], step_s)
    month = np.searchsorted(np.array(edges), h.time_s, side="right") - 1
    ratio = np.array([h.facility_kw[month == m].sum() / h.it_kw[month == m].sum()
                      for m in range(12)])
    low = np.array([h.pue[month == m].min() for m in range(12)])
    high = np.array([h.pue[month == m].max() for m in range(12)])
    return ratio, low, high


def plot(h: PlantHistory, months: tuple[Array, Array, Array], year: int, out: str,
         title: str) -> None:
    """Write the figure: loads, cooling and wet bulb, PUE over the run, PUE by month."""
    tz = ZoneInfo("Asia/Hong_Kong")
    when = [datetime.fromtimestamp(t, tz) for t in h.time_s]
    fig, axes = plt.subplots(4, 1, figsize=(13, 13), gridspec_kw={"height_ratios": [3, 2, 2, 2.4]})
    ax = axes[0]
    ax.plot(when, h.facility_kw, lw=0.6, color="tab:red",
            label="facility input (utility + generator)")
    ax.plot(when, h.it_kw, lw=0.6, color="tab:blue", label="IT at rack inputs")
    ax.plot(when, h.cooling_kw, lw=0.6, color="tab:cyan", label="cooling plant (MCC A+B)")
    ax.plot(when, h.ups_loss_kw + h.pdu_loss_kw + h.tx_loss_kw, lw=0.6, color="tab:purple",
            label="UPS + PDU + transformer losses")
    ax.set_ylabel("kW")
    ax.set_ylim(0, 1.2 * float(h.facility_kw.max()))
    ax.legend(loc="upper center", fontsize=8, ncol=4)
    ax.set_title(title)
    ax = axes[1]
    ax.plot(when, h.wet_bulb_c, lw=0.6, color="tab:green", label="outdoor wet bulb")
    ax.plot(when, h.outdoor_temp_c, lw=0.6, color="tab:orange", alpha=0.6, label="outdoor dry bulb")
    ax.set_ylabel("degC")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[2]
    ax.plot(when, h.pue, lw=0.5, color="0.4", label="PUE (1-min, category 3)")
    day = (h.time_s - h.time_s[0]) // 86400
    daily = np.array([h.facility_kw[day == d].sum() / h.it_kw[day == d].sum()
                      for d in np.unique(day)])
    noon = [datetime.fromtimestamp(h.time_s[0] + (d + 0.5) * 86400, tz) for d in np.unique(day)]
    ax.step(noon, daily, where="mid", color="tab:red", label="daily PUE")
    ax.set_ylabel("PUE")
    ax.legend(loc="upper right", fontsize=8)
    for a in axes[:3]:
        a.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b", tz=tz))
        a.grid(alpha=0.3)
    ratio, low, high = months
    ax = axes[3]
    x = np.arange(1, 13)
    ax.fill_between(x, low, high, color="tab:red", alpha=0.15, label="min-max of hourly PUE")
    ax.plot(x, ratio, "o-", color="tab:red", label="monthly PUE (energy ratio)")
    ax.set_xticks(x, ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                      "Dec"])
    ax.set_ylabel("PUE")
    ax.set_title(f"PUE by month, {year} (Hong Kong normals + weather noise)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Run the model over a window and a year, print the PUE band, write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="config/cyberport5.yaml")
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--start", default="2026-07-01", help="local date YYYY-MM-DD")
    parser.add_argument("--step", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/img/plant-30d.png")
    args = parser.parse_args(argv)
    site = load_site(args.site)
    tz = ZoneInfo(site.config.site.timezone)
    start = datetime.strptime(args.start, "%Y-%m-%d").replace(tzinfo=tz)
    t0 = start.timestamp()
    tic = time.perf_counter()
    h = PlantModel(site, seed=args.seed).history(t0, t0 + args.days * 86400, args.step)
    elapsed = time.perf_counter() - tic
    print(f"{len(h.time_s)} steps of {args.step:g} s in {elapsed:.2f} s")
    print(f"PUE over {args.days:g} days from {args.start}: min {h.pue.min():.3f} "
          f"mean {h.pue.mean():.3f} max {h.pue.max():.3f} "
          f"(energy ratio {h.facility_kw.sum() / h.it_kw.sum():.3f})")
    months = monthly_pue(args.site, start.year, args.seed, 3600.0)
    print("PUE by month: " + " ".join(f"{m + 1}:{p:.3f}" for m, p in enumerate(months[0])))
    title = (f"{site.config.site.name}: simulated {args.days:g} days from {args.start} "
             f"(seed {args.seed}, {args.step:g} s steps)")
    plot(h, months, start.year, args.out, title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
