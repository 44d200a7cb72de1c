"""Damped Lyman-alpha absorbers in quasar spectra (``ml_dla``).

A 1D CNN over windows of the Lyman-alpha forest with three outputs per
pixel (absorber or not, offset to the absorber centre, log N(HI)), after
Parks, Prochaska, Dong & Cai (2018), trained on DLAs injected into
simulated DLA-free quasar spectra.  See ``doc/dla.md``.
"""
