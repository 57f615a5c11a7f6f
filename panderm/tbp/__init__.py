"""Total-body-photography (TBP) screening: risk head, ugly-duckling outliers and a measurement model.

Modules: :mod:`.measurements` (Vectra/ISIC 2024 columns, lesion filter, imputation),
:mod:`.image_measures` (``--measure-from-image``), :mod:`.inputs` (patient, cohort and
ISIC 2024 layouts), :mod:`.bundle` (the saved screening model), :mod:`.train`,
:mod:`.screen`, :mod:`.metrics`, :mod:`.evaluate` and :mod:`.report` (HTML).
"""
