"""Quality of the DLA search: completeness, purity and errors on injected DLAs; real spectra.

Matching (`match_catalog`): a true DLA is recovered when a found absorber
(any row with ``absorber >= 0``) lies within ``|dz| < 0.01`` of it; each
found absorber is matched to its nearest true absorber.  Definitions:

* completeness: recovered / injected, for injected ``log N >= 20.3``;
* purity: of the found absorbers with ``is_dla`` (``log_nhi >= 20.3``),
  the fraction matched to a true absorber with ``log N >= 20.0``
  (``purity_loose``: within the log N error of the threshold) or
  ``>= 20.3`` (``purity``: strict);
* redshift and column-density errors of the matched DLAs: median and
  68% half-width of ``z_found - z_true`` and ``log_nhi - log N``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LOG_NHI_BINS", "SNR_BINS", "choose_confidence_threshold", "match_catalog", "quality_table"]

#: Bins of true log N(HI) of the quality table.
LOG_NHI_BINS = (20.3, 20.6, 21.0, 21.5, 22.5)
#: Bins of simulated continuum S/N per pixel.
SNR_BINS = (2.0, 5.0, 10.0, 20.0, 60.0)
_DZ = 0.01


def _half68(x: np.ndarray) -> float:
    return float(0.5 * (np.percentile(x, 84) - np.percentile(x, 16))) if len(x) else float("nan")


def match_catalog(catalog: Any, sightlines: Sequence[Any]) -> dict[str, Any]:
    """Match an ``ml_dla`` catalog to the truth of simulated sightlines.

    Parameters
    ----------
    catalog : `astropy.table.Table`
        Output of `~lsst.meas.ml.dla.predict.predict_dla` on the sightlines.
    sightlines : `~collections.abc.Sequence` [`~lsst.meas.ml.dla.simulate.SimulatedSightline`]
        The sightlines, with their injected DLAs and other absorbers.

    Returns
    -------
    result : `dict`
        ``truth``: one record per injected DLA (``log_nhi``, ``snr``,
        ``found``, ``dz``, ``dlogn``); ``found``: one record per found
        absorber (``is_dla``, ``true_log_nhi`` of its match or NaN,
        ``snr``); ``summary``: the figures of the module documentation
        (all S/N, and ``*_snr5`` for S/N > 5).
    """
    by_id: dict[str, list[int]] = {}
    ids = np.asarray(catalog["source_id"]).astype(str)
    for i, sid in enumerate(ids):
        if int(catalog["absorber"][i]) >= 0:
            by_id.setdefault(sid, []).append(i)
    z_found = np.asarray(catalog["z_abs"], float)
    n_found = np.asarray(catalog["log_nhi"], float)
    truth, found = [], []
    for sl in sightlines:
        rows = by_id.get(sl.spectrum.source_id, [])
        absorbers = list(sl.dlas) + [o for o in sl.others if o[1] >= 19.0]
        for z, log_n in sl.dlas:
            d = [abs(z_found[r] - z) for r in rows]
            k = int(np.argmin(d)) if d else -1
            ok = k >= 0 and d[k] < _DZ
            truth.append(
                {
                    "log_nhi": log_n,
                    "snr": sl.snr,
                    "found": ok,
                    "found_as_dla": ok and bool(catalog["is_dla"][rows[k]]),
                    "dz": float(z_found[rows[k]] - z) if ok else np.nan,
                    "dlogn": float(n_found[rows[k]] - log_n) if ok else np.nan,
                }
            )
        for r in rows:
            d = [abs(z_found[r] - z) for z, _ in absorbers]
            k = int(np.argmin(d)) if d else -1
            true_n = absorbers[k][1] if k >= 0 and d[k] < _DZ else np.nan
            found.append(
                {
                    "is_dla": bool(catalog["is_dla"][r]),
                    "confidence": float(catalog["confidence"][r]),
                    "true_log_nhi": true_n,
                    "snr": sl.snr,
                    "log_nhi": n_found[r],
                }
            )
    return {"truth": truth, "found": found, "summary": _summary(truth, found)}


def choose_confidence_threshold(
    result: dict[str, Any], *, target_purity: float = 0.9, snr_min: float = 5.0
) -> float:
    """Choose the lowest confidence threshold whose strict purity reaches a target.

    Parameters
    ----------
    result : `dict`
        Output of `match_catalog` for a run with the threshold at 0.5.
    target_purity : `float`
        Purity (found ``is_dla`` absorbers matching a true log N >= 20.3)
        to reach.
    snr_min : `float`
        Only sightlines with a simulated S/N above this count.

    Returns
    -------
    threshold : `float`
        Between 0.5 and 0.95; the threshold of highest purity when none
        reaches the target.
    """
    found = [r for r in result["found"] if r["is_dla"] and r["snr"] > snr_min]
    best, best_purity = 0.5, -1.0
    for t in np.round(np.arange(0.5, 0.951, 0.01), 2):
        tn = np.array([r["true_log_nhi"] for r in found if r["confidence"] >= t], float)
        if len(tn) == 0:
            break
        with np.errstate(invalid="ignore"):
            purity = float(np.mean(tn >= 20.3))
        if purity >= target_purity:
            return float(t)
        if purity > best_purity:
            best, best_purity = float(t), purity
    return best


def _summary(truth: list[dict[str, Any]], found: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for suffix, snr_min in (("", 0.0), ("_snr5", 5.0)):
        t = [r for r in truth if r["log_nhi"] >= 20.3 and r["snr"] > snr_min]
        f = [r for r in found if r["is_dla"] and r["snr"] > snr_min]
        out[f"completeness{suffix}"] = float(np.mean([r["found"] for r in t])) if t else float("nan")
        out[f"completeness_as_dla{suffix}"] = (
            float(np.mean([r["found_as_dla"] for r in t])) if t else float("nan")
        )
        tn = np.array([r["true_log_nhi"] for r in f], float)
        with np.errstate(invalid="ignore"):
            out[f"purity{suffix}"] = float(np.mean(tn >= 20.3)) if f else float("nan")
            out[f"purity_loose{suffix}"] = float(np.mean(tn >= 20.0)) if f else float("nan")
        out[f"n_true_dla{suffix}"] = len(t)
        out[f"n_found_dla{suffix}"] = len(f)
        dz = np.array([r["dz"] for r in t if r["found"]])
        dn = np.array([r["dlogn"] for r in t if r["found"]])
        out[f"dz_median{suffix}"] = float(np.median(dz)) if len(dz) else float("nan")
        out[f"dz_sigma68{suffix}"] = _half68(dz)
        out[f"log_nhi_bias{suffix}"] = float(np.median(dn)) if len(dn) else float("nan")
        out[f"log_nhi_sigma68{suffix}"] = _half68(dn)
    dn_all = np.array([r["dlogn"] for r in truth if r["found"]])
    out["log_nhi_scatter"] = _half68(dn_all)
    return out


def quality_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Completeness and purity per bin of true log N(HI) and simulated S/N.

    Parameters
    ----------
    result : `dict`
        Output of `match_catalog`.

    Returns
    -------
    rows : `list` [`dict`]
        One per (log N bin, S/N bin): ``log_nhi``, ``snr`` (bin labels),
        ``n_true``, ``completeness``, ``n_found``, ``purity`` (strict),
        ``dz_sigma68``, ``log_nhi_bias``, ``log_nhi_sigma68``; then one row
        per S/N bin over all log N >= 20.3.
    """
    rows = []
    truth, found = result["truth"], result["found"]
    nbins = list(zip(LOG_NHI_BINS[:-1], LOG_NHI_BINS[1:])) + [(20.3, 99.0)]
    for n0, n1 in nbins:
        for s0, s1 in zip(SNR_BINS[:-1], SNR_BINS[1:]):
            t = [r for r in truth if n0 <= r["log_nhi"] < n1 and s0 <= r["snr"] < s1]
            f = [r for r in found if r["is_dla"] and n0 <= r["log_nhi"] < n1 and s0 <= r["snr"] < s1]
            tn = np.array([r["true_log_nhi"] for r in f], float)
            dz = np.array([r["dz"] for r in t if r["found"]])
            dn = np.array([r["dlogn"] for r in t if r["found"]])
            with np.errstate(invalid="ignore"):
                rows.append(
                    {
                        "log_nhi": f"{n0:.1f}-{n1:.1f}" if n1 < 99 else f">={n0:.1f}",
                        "snr": f"{s0:g}-{s1:g}",
                        "n_true": len(t),
                        "completeness": float(np.mean([r["found"] for r in t])) if t else float("nan"),
                        "n_found": len(f),
                        "purity": float(np.mean(tn >= 20.3)) if f else float("nan"),
                        "dz_sigma68": _half68(dz),
                        "log_nhi_bias": float(np.median(dn)) if len(dn) else float("nan"),
                        "log_nhi_sigma68": _half68(dn),
                    }
                )
    return rows


def injected_quality(
    package: Any, n_sightlines: int, *, seed: int = 12345, config: Any = None
) -> dict[str, Any]:
    """Completeness, purity and errors on freshly simulated test sightlines.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``dla`` package.
    n_sightlines : `int`
        Test sightlines (DLAs injected as in training, another seed).
    seed : `int`
        Random seed.
    config : `~lsst.meas.ml.dla.simulate.SimulationConfig`, optional
        Ranges (default those of training).

    Returns
    -------
    report : `dict`
        ``summary`` (see `match_catalog`) and ``table`` (`quality_table`).
    """
    from .predict import predict_dla
    from .simulate import simulate_sightline

    rng = np.random.default_rng(seed)
    sightlines = [simulate_sightline(rng, config, source_id=f"test-{i}") for i in range(n_sightlines)]
    result = match_catalog(predict_dla(package, [s.spectrum for s in sightlines]), sightlines)
    return {
        "n_sightlines": n_sightlines,
        "seed": seed,
        "summary": result["summary"],
        "table": quality_table(result),
    }


_CATALOGUES = ("H100_DLA.fits", "XQ100_v1_2.fits.gz", "dr5_alldla.fits.gz", "noterdaeme_dr7.fits")


def _catalogue_entries(directory: str) -> list[dict[str, Any]]:
    """DLAs of the catalogues in ``directory``: name, ra, dec, z_qso, z_abs, log_nhi."""
    import os
    import warnings

    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    out: list[dict[str, Any]] = []
    for name in _CATALOGUES:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = Table.read(path)
        if name.startswith("H100"):
            for r in t:
                out.append(
                    {
                        "catalogue": name,
                        "ra": float(r["RA"]),
                        "dec": float(r["DEC"]),
                        "z_qso": float(r["Z_QSO"]),
                        "z_abs": float(r["ZABS"]),
                        "log_nhi": float(r["logNHI"]),
                    }
                )
        elif name.startswith("XQ100"):
            for r in t:
                for k in range(int(r["N_ABS"])):
                    out.append(
                        {
                            "catalogue": name,
                            "ra": float(r["RA"]),
                            "dec": float(r["DEC"]),
                            "z_qso": float(r["Z_QSO"]),
                            "z_abs": float(r["Z_ABS"][k]),
                            "log_nhi": float(r["NHI_ABS"][k]),
                        }
                    )
                if int(r["N_ABS"]) == 0:
                    out.append(
                        {
                            "catalogue": name,
                            "ra": float(r["RA"]),
                            "dec": float(r["DEC"]),
                            "z_qso": float(r["Z_QSO"]),
                            "z_abs": float("nan"),
                            "log_nhi": float("nan"),
                        }
                    )
        elif name.startswith("dr5"):
            c = SkyCoord(t["QSO_RA"], t["QSO_DEC"], unit=("hourangle", "deg"))
            for r, ra, dec in zip(t, c.ra.deg, c.dec.deg):
                out.append(
                    {
                        "catalogue": name,
                        "ra": float(ra),
                        "dec": float(dec),
                        "z_qso": float(r["QSO_ZEM"]),
                        "z_abs": float(r["ZABS"]),
                        "log_nhi": float(r["NHI"]),
                    }
                )
        else:
            for r in t:
                out.append(
                    {
                        "catalogue": name,
                        "ra": float(r["_RA"]),
                        "dec": float(r["_DE"]),
                        "z_qso": float(r["zem"]),
                        "z_abs": float(r["zabs"]),
                        "log_nhi": float(r["logN_HI_"]),
                    }
                )
    return out


def real_spectra_quality(
    package: Any, directory: str, *, z_override: dict[str, float] | None = None, radius_arcsec: float = 60.0
) -> list[dict[str, Any]]:
    """Run the package on the real spectra of a directory and compare with its catalogues.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``dla`` package.
    directory : `str`
        Directory of spectra and of the catalogues H100 (Neeleman et al.
        2013), XQ100 (Lopez et al. 2016), SDSS DR5 (Prochaska & Wolfe
        2009) and DR7 (Noterdaeme et al. 2009).
    z_override : `dict` [`str`, `float`], optional
        Quasar redshifts by source id, for spectra no catalogue covers.
    radius_arcsec : `float`
        Position match radius.

    Returns
    -------
    rows : `list` [`dict`]
        One per spectrum: ``source_id``, ``z_qso`` and where it came from,
        the searched redshift range, ``flags``, ``found`` (z_abs, log_nhi,
        err, confidence, is_dla) and ``catalogue`` DLAs (with ``in_search``
        and the matched ``dz``, ``dlogn``).
    """
    import glob
    import os

    from .features import DlaFlag
    from .predict import predict_dla
    from .spectra import SpectrumReadError, read_spectra

    z_override = z_override or {}
    entries = _catalogue_entries(directory)
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "*.fits*"))):
        base = os.path.basename(path)
        if (
            base in _CATALOGUES
            or base.startswith("dr5_")
            or any(base.endswith(s) for s in ("_e.fits", "_nE.fits", "_c.fits"))
        ):
            continue
        try:
            spectra = read_spectra(path)
        except SpectrumReadError:
            continue
        for s in spectra:
            near = [
                e
                for e in entries
                if np.isfinite(s.ra) and _sep_arcsec(s.ra, s.dec, e["ra"], e["dec"]) < radius_arcsec
            ]
            z_source = "file"
            if s.source_id in z_override:
                s = s.with_z(z_override[s.source_id])
                z_source = "command line"
            elif not np.isfinite(s.z_qso) and near:
                s = s.with_z(near[0]["z_qso"])
                z_source = near[0]["catalogue"]
            cat = predict_dla(package, [s])
            found = [
                {
                    "z_abs": float(r["z_abs"]),
                    "log_nhi": float(r["log_nhi"]),
                    "log_nhi_err": float(r["log_nhi_err"]),
                    "confidence": float(r["confidence"]),
                    "is_dla": bool(r["is_dla"]),
                    "flags": int(r["dla_flags"]),
                }
                for r in cat
                if r["absorber"] >= 0
            ]
            zmin, zmax = float(cat["z_search_min"][0]), float(cat["z_search_max"][0])
            known: dict[tuple[float, float], dict[str, Any]] = {}
            for e in near:
                if not np.isfinite(e["z_abs"]):
                    continue
                key = (round(e["z_abs"], 2), round(e["log_nhi"], 1))
                if key in known:
                    known[key]["catalogue"] += ", " + e["catalogue"]
                    continue
                d = [abs(f["z_abs"] - e["z_abs"]) for f in found]
                k = int(np.argmin(d)) if d else -1
                ok = k >= 0 and d[k] < _DZ
                known[key] = {
                    "catalogue": e["catalogue"],
                    "z_abs": e["z_abs"],
                    "log_nhi": e["log_nhi"],
                    "in_search": bool(zmin <= e["z_abs"] <= zmax),
                    "found": ok,
                    "dz": found[k]["z_abs"] - e["z_abs"] if ok else float("nan"),
                    "dlogn": found[k]["log_nhi"] - e["log_nhi"] if ok else float("nan"),
                }
            flags = int(cat["dla_flags"][0]) if len(cat) else 0
            rows.append(
                {
                    "source_id": s.source_id,
                    "file": base,
                    "z_qso": s.z_qso,
                    "z_qso_from": z_source,
                    "z_search": [zmin, zmax],
                    "snr": float(cat["snr"][0]),
                    "flags": [
                        m.name
                        for m in DlaFlag
                        if flags & m and m.name not in ("CENTRE_MASKED", "NEAR_EDGE", "SUB_DLA")
                    ],
                    "found": found,
                    "catalogue": list(known.values()),
                }
            )
    return rows


def _sep_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = np.radians([ra1, dec1, ra2, dec2])
    c = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))) * 3600)


def print_quality(report: dict[str, Any]) -> None:
    """Print a quality report as tables.

    Parameters
    ----------
    report : `dict`
        ``injected`` (`injected_quality`) and optionally ``real``
        (`real_spectra_quality`).
    """
    inj = report["injected"]
    s = inj["summary"]
    print(f"Injected DLAs: {inj['n_sightlines']} simulated test sightlines (seed {inj['seed']})")
    for suffix, label in (("", "all S/N"), ("_snr5", "S/N > 5")):
        print(
            f"  {label}: completeness (log N >= 20.3) {s['completeness' + suffix]:.3f} "
            f"({s['n_true_dla' + suffix]} DLAs; {s['completeness_as_dla' + suffix]:.3f} with is_dla), "
            f"purity {s['purity' + suffix]:.3f} "
            f"(loose {s['purity_loose' + suffix]:.3f}; {s['n_found_dla' + suffix]} found), "
            f"dz median {s['dz_median' + suffix]:+.5f} sigma68 {s['dz_sigma68' + suffix]:.5f}, "
            f"log N bias {s['log_nhi_bias' + suffix]:+.3f} sigma68 {s['log_nhi_sigma68' + suffix]:.3f}"
        )
    print(
        f"  {'log N':>9} {'S/N':>7} {'n_true':>6} {'compl.':>7} {'n_found':>7} {'purity':>7} "
        f"{'dz_s68':>8} {'dlogN':>7} {'dlogN_s68':>9}"
    )
    for r in inj["table"]:
        print(
            f"  {r['log_nhi']:>9} {r['snr']:>7} {r['n_true']:>6} {r['completeness']:>7.3f} {r['n_found']:>7} "
            f"{r['purity']:>7.3f} {r['dz_sigma68']:>8.5f} {r['log_nhi_bias']:>+7.3f} "
            f"{r['log_nhi_sigma68']:>9.3f}"
        )
    for r in report.get("real", []):
        print(
            f"Real spectrum {r['source_id']} ({r['file']}): z_qso {r['z_qso']:.3f} (from {r['z_qso_from']}), "
            f"searched z {r['z_search'][0]:.3f}-{r['z_search'][1]:.3f}, S/N {r['snr']:.1f}, "
            f"flags {r['flags'] or 'none'}"
        )
        for f in r["found"]:
            print(
                f"    found  z_abs {f['z_abs']:.4f} log N {f['log_nhi']:.2f} +- {f['log_nhi_err']:.2f} "
                f"confidence {f['confidence']:.2f}{' DLA' if f['is_dla'] else ''}"
            )
        for c in r["catalogue"]:
            what = (
                f"found: dz {c['dz']:+.4f}, dlogN {c['dlogn']:+.2f}"
                if c["found"]
                else ("missed" if c["in_search"] else "outside the searched range")
            )
            print(f"    catalogue z_abs {c['z_abs']:.4f} log N {c['log_nhi']:.2f} ({c['catalogue']}): {what}")
