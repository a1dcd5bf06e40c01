"""The control experiment (Yan et al. 2020, Sec. 3.2, Fig. 3): ``driver``, ``settings``
(``control.<key>=<value>``), ``probe`` (linear probes on fixed features) and ``report``."""
