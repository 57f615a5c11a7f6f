"""The paper's published figures as :class:`~panderm.reproduce.benchmarks.Benchmark` entries.

Every number below is transcribed from Yan et al., "A multimodal vision foundation
model for clinical dermatology" (Nature Medicine 2025), Extended Data Tables 1,
11–13 and 15–22, exactly as printed: the point estimate and its 95% CI, with the
significance stars dropped. Each table is kept whole (every model's row) in the
``_TABLE_*`` literals so that the choice of the strongest baseline can be audited;
a :class:`Benchmark` carries PanDerm's row(s) and the strongest baseline's row(s)
only. ``tests/test_reproduce_paper.py`` re-reads the paper text and checks every
figure here against the printed row.

The strongest baseline of an entry is the non-PanDerm model with the best value
of the entry's primary metric (ties broken by the table's other metrics, left to
right); for a label-efficiency curve, the best mean of the primary metric over
the printed percents. Model names are kept as each table prints them (Table 1:
``SL_Imagenet``, ``DINOV2``, ``SwaVDerm``; Tables 15–20: ``SL_ImageNet``,
``DINOv2``, ``SwAVDerm``).
"""

from __future__ import annotations

import re

from panderm.reproduce.benchmarks import PAPER_METRICS, Benchmark, Figure, PaperResult

#: One printed table: row group (dataset, percent, category) → model or subgroup → cells as printed.
_Table = dict[str, dict[str, tuple[str, ...]]]

_CLASSIFICATION_COLUMNS = ("W_F1", "AUROC", "BACC", "AUPR")
_SEGMENTATION_COLUMNS = ("DSC", "JAC")
_PERCENTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)

_RELEASE = "github.com/SiyuanYan1/PanDerm"
_PROCESSED = (f"Official processed CSV and images: the PanDerm release ({_RELEASE}), README section "
              f"'Using Pre-processed Public Datasets', entry '{{entry}}' (the release asks that these, not the "
              f"original downloads, be used to reproduce the paper: its splits avoid patient leakage).")

_PROBE = ("linear probe, release protocol: L-BFGS (strong Wolfe, max 1,000 iterations), C = D·K/100 "
          "(D = 1024 for PanDerm-L, K = distinct train labels), mean cross-entropy + (1/C)·0.5·‖W‖ (plain "
          "Frobenius norm, bias unregularised); fit on split == train only (val unused), test on split == "
          "test; features: CLS token after the final LayerNorm, fp32, no normalisation; eval transform "
          "Resize(256) → CenterCrop(224), mean (0.485, 0.456, 0.406), std (0.228, 0.224, 0.225); "
          "95% CI: 1,000 bootstrap replicates of the test set")
_CURVE = ("label efficiency: the linear probe of the release protocol (as for the full-data entry) fitted "
          "on a fraction p of the train rows, val/test untouched, evaluated on the whole test split, "
          "p ∈ {5, 10, 20, 30, 50, 100}%. The release's --percent_data shuffles the train rows with "
          "random_state=42 and keeps the first ⌊n·p⌋; `panderm probe --percent-data` keeps a stratified, "
          "seeded max(1, round(p·n_class)) per class instead, so points below 100% use other subsamples")

# ---------------------------------------------------------------------------------------------
# The printed tables (cells as printed, significance stars dropped)
# ---------------------------------------------------------------------------------------------

#: Extended Data Table 1: dataset → model → (W_F1, AUROC, BACC, AUPR).
_TABLE_1: _Table = {
    "PAD": {
        "SL_Imagenet": ("0.678 (0.636-0.720)", "0.887 (0.864-0.911)", "0.614 (0.540-0.688)", "0.759 (0.718-0.799)"),
        "DINOV2": ("0.702 (0.662-0.743)", "0.885 (0.861-0.908)", "0.607 (0.535-0.679)", "0.753 (0.710-0.796)"),
        "SwaVDerm": ("0.656 (0.614-0.698)", "0.865 (0.838-0.891)", "0.534 (0.469-0.599)", "0.718 (0.675-0.761)"),
        "PanDerm": ("0.768 (0.732-0.805)", "0.935 (0.919-0.951)", "0.694 (0.624-0.764)", "0.849 (0.817-0.880)"),
    },
    "HAM10000": {
        "SL_Imagenet": ("0.879 (0.863-0.895)", "0.970 (0.962-0.978)", "0.653 (0.586-0.720)", "0.922 (0.909-0.936)"),
        "DINOV2": ("0.883 (0.868-0.899)", "0.964 (0.954-0.974)", "0.701 (0.637-0.765)", "0.916 (0.901-0.931)"),
        "SwaVDerm": ("0.865 (0.848-0.883)", "0.967 (0.959-0.975)", "0.592 (0.521-0.663)", "0.910 (0.896-0.924)"),
        "PanDerm": ("0.926 (0.912-0.940)", "0.988 (0.984-0.992)", "0.807 (0.756-0.859)", "0.959 (0.949-0.970)"),
    },
    "DermC": {
        "SL_Imagenet": ("0.756 (0.694-0.818)", "0.797 (0.726-0.867)", "0.700 (0.631-0.770)", "0.683 (0.575-0.791)"),
        "DINOV2": ("0.763 (0.702-0.824)", "0.796 (0.719-0.872)", "0.717 (0.649-0.786)", "0.735 (0.644-0.826)"),
        "SwaVDerm": ("0.750 (0.687-0.814)", "0.768 (0.690-0.846)", "0.700 (0.628-0.771)", "0.658 (0.543-0.774)"),
        "PanDerm": ("0.788 (0.728-0.847)", "0.876 (0.824-0.928)", "0.740 (0.672-0.808)", "0.798 (0.710-0.886)"),
    },
    "BCN20000": {
        "SL_Imagenet": ("0.698 (0.673-0.722)", "0.914 (0.903-0.925)", "0.592 (0.537-0.647)", "0.754 (0.728-0.779)"),
        "DINOV2": ("0.724 (0.701-0.747)", "0.927 (0.917-0.938)", "0.575 (0.518-0.632)", "0.787 (0.765-0.810)"),
        "SwaVDerm": ("0.696 (0.672-0.720)", "0.908 (0.897-0.919)", "0.499 (0.444-0.554)", "0.742 (0.717-0.768)"),
        "PanDerm": ("0.772 (0.750-0.795)", "0.952 (0.944-0.960)", "0.662 (0.616-0.708)", "0.846 (0.825-0.867)"),
    },
    "DDI": {
        "SL_Imagenet": ("0.773 (0.710-0.836)", "0.743 (0.639-0.847)", "0.655 (0.554-0.755)", "0.412 (0.283-0.541)"),
        "DINOV2": ("0.756 (0.695-0.816)", "0.749 (0.649-0.849)", "0.612 (0.518-0.706)", "0.456 (0.308-0.605)"),
        "SwaVDerm": ("0.730 (0.668-0.792)", "0.747 (0.650-0.845)", "0.571 (0.483-0.660)", "0.421 (0.294-0.548)"),
        "PanDerm": ("0.790 (0.728-0.852)", "0.843 (0.768-0.918)", "0.722 (0.624-0.819)", "0.551 (0.397-0.705)"),
    },
    "HIBA": {
        "SL_Imagenet": ("0.881 (0.850-0.911)", "0.881 (0.823-0.940)", "0.685 (0.612-0.759)", "0.638 (0.511-0.765)"),
        "DINOV2": ("0.884 (0.852-0.915)", "0.873 (0.816-0.930)", "0.737 (0.663-0.812)", "0.616 (0.486-0.747)"),
        "SwaVDerm": ("0.865 (0.834-0.895)", "0.854 (0.799-0.910)", "0.657 (0.585-0.729)", "0.519 (0.387-0.651)"),
        "PanDerm": ("0.928 (0.901-0.954)", "0.948 (0.922-0.975)", "0.810 (0.740-0.880)", "0.765 (0.652-0.878)"),
    },
    "MSKCC": {
        "SL_Imagenet": ("0.712 (0.691-0.732)", "0.733 (0.708-0.758)", "0.635 (0.611-0.660)", "0.482 (0.444-0.521)"),
        "DINOV2": ("0.707 (0.687-0.728)", "0.722 (0.695-0.748)", "0.662 (0.636-0.689)", "0.497 (0.457-0.537)"),
        "SwaVDerm": ("0.715 (0.696-0.733)", "0.720 (0.692-0.748)", "0.617 (0.593-0.641)", "0.515 (0.474-0.556)"),
        "PanDerm": ("0.737 (0.718-0.756)", "0.761 (0.735-0.787)", "0.653 (0.628-0.677)", "0.589 (0.548-0.630)"),
    },
    "PATCH16": {
        "SL_Imagenet": ("0.873 (0.867-0.878)", "0.992 (0.991-0.992)", "0.834 (0.808-0.859)", "0.936 (0.932-0.941)"),
        "DINOV2": ("0.892 (0.886-0.897)", "0.993 (0.992-0.994)", "0.820 (0.813-0.828)", "0.945 (0.941-0.949)"),
        "SwaVDerm": ("0.816 (0.809-0.822)", "0.984 (0.983-0.985)", "0.742 (0.734-0.751)", "0.891 (0.885-0.896)"),
        "PanDerm": ("0.903 (0.898-0.908)", "0.994 (0.993-0.994)", "0.879 (0.854-0.903)", "0.946 (0.943-0.950)"),
    },
    "ISIC2024": {
        "SL_Imagenet": ("0.877 (0.873-0.877)", "0.849 (0.765-0.917)", "0.727 (0.635-0.811)", "0.860 (0.835-0.885)"),
        "DINOV2": ("0.851 (0.849-0.853)", "0.827 (0.745-0.870)", "0.682 (0.606-0.752)", "0.850 (0.825-0.875)"),
        "SwaVDerm": ("0.869 (0.866-0.871)", "0.852 (0.789-0.877)", "0.689 (0.599-0.774)", "0.835 (0.810-0.860)"),
        "PanDerm": ("0.929 (0.927-0.931)", "0.893 (0.839-0.940)", "0.799 (0.718-0.873)", "0.915 (0.895-0.935)"),
    },
    "WSI": {
        "SL_Imagenet": ("0.945 (0.925-0.965)", "0.989 (0.977-1.002)", "0.937 (0.906-0.960)", "0.941 (0.930-0.947)"),
        "DINOV2": ("0.947 (0.919-0.974)", "0.988 (0.976-1.000)", "0.932 (0.910-0.945)", "0.930 (0.906-0.956)"),
        "SwaVDerm": ("0.932 (0.914-0.951)", "0.989 (0.978-1.000)", "0.893 (0.882-0.910)", "0.920 (0.905-0.935)"),
        "PanDerm": ("0.953 (0.930-0.975)", "0.994 (0.986-1.001)", "0.976 (0.963-0.994)", "0.981 (0.972-0.993)"),
    },
}

_TABLE_15: _Table = {
    "5%": {
        "SL_ImageNet": ("0.792 (0.774-0.809)", "0.919 (0.905-0.934)", "0.337 (0.294-0.379)", "0.853 (0.838-0.867)"),
        "DINOv2": ("0.803 (0.786-0.821)", "0.928 (0.913-0.943)", "0.380 (0.322-0.437)", "0.852 (0.837-0.867)"),
        "SwAVDerm": ("0.793 (0.776-0.810)", "0.917 (0.901-0.932)", "0.322 (0.288-0.356)", "0.841 (0.826-0.855)"),
        "PanDerm": ("0.851 (0.834-0.868)", "0.960 (0.950-0.970)", "0.524 (0.459-0.589)", "0.902 (0.888-0.915)"),
    },
    "10%": {
        "SL_ImageNet": ("0.816 (0.797-0.834)", "0.937 (0.925-0.949)", "0.414 (0.365-0.464)", "0.871 (0.856-0.886)"),
        "DINOv2": ("0.824 (0.807-0.841)", "0.939 (0.926-0.953)", "0.448 (0.389-0.506)", "0.871 (0.856-0.886)"),
        "SwAVDerm": ("0.811 (0.794-0.827)", "0.923 (0.907-0.938)", "0.365 (0.329-0.402)", "0.854 (0.840-0.869)"),
        "PanDerm": ("0.872 (0.855-0.888)", "0.969 (0.961-0.978)", "0.618 (0.550-0.686)", "0.923 (0.910-0.936)"),
    },
    "20%": {
        "SL_ImageNet": ("0.838 (0.820-0.855)", "0.940 (0.928-0.952)", "0.506 (0.439-0.573)", "0.880 (0.865-0.896)"),
        "DINOv2": ("0.839 (0.822-0.856)", "0.947 (0.935-0.959)", "0.534 (0.467-0.600)", "0.884 (0.869-0.899)"),
        "SwAVDerm": ("0.825 (0.809-0.842)", "0.931 (0.916-0.946)", "0.408 (0.357-0.460)", "0.871 (0.855-0.886)"),
        "PanDerm": ("0.889 (0.873-0.905)", "0.975 (0.968-0.982)", "0.665 (0.594-0.736)", "0.935 (0.924-0.947)"),
    },
    "30%": {
        "SL_ImageNet": ("0.837 (0.820-0.855)", "0.945 (0.933-0.956)", "0.505 (0.438-0.571)", "0.883 (0.867-0.899)"),
        "DINOv2": ("0.848 (0.831-0.864)", "0.951 (0.939-0.962)", "0.559 (0.488-0.630)", "0.894 (0.880-0.909)"),
        "SwAVDerm": ("0.839 (0.822-0.857)", "0.939 (0.925-0.953)", "0.493 (0.428-0.558)", "0.879 (0.864-0.895)"),
        "PanDerm": ("0.895 (0.880-0.911)", "0.979 (0.973-0.985)", "0.721 (0.653-0.788)", "0.943 (0.931-0.954)"),
    },
    "50%": {
        "SL_ImageNet": ("0.855 (0.838-0.872)", "0.957 (0.947-0.967)", "0.565 (0.492-0.638)", "0.904 (0.889-0.919)"),
        "DINOv2": ("0.855 (0.838-0.872)", "0.953 (0.940-0.965)", "0.597 (0.529-0.664)", "0.902 (0.888-0.916)"),
        "SwAVDerm": ("0.854 (0.836-0.871)", "0.953 (0.941-0.964)", "0.557 (0.489-0.626)", "0.893 (0.878-0.908)"),
        "PanDerm": ("0.909 (0.894-0.924)", "0.981 (0.976-0.987)", "0.749 (0.685-0.814)", "0.950 (0.939-0.961)"),
    },
    "100%": {
        "SL_ImageNet": ("0.872 (0.856-0.888)", "0.967 (0.958-0.976)", "0.652 (0.584-0.720)", "0.919 (0.905-0.934)"),
        "DINOv2": ("0.876 (0.860-0.892)", "0.962 (0.951-0.972)", "0.686 (0.621-0.751)", "0.913 (0.898-0.928)"),
        "SwAVDerm": ("0.864 (0.847-0.881)", "0.963 (0.954-0.972)", "0.592 (0.520-0.664)", "0.904 (0.889-0.919)"),
        "PanDerm": ("0.922 (0.908-0.936)", "0.988 (0.984-0.992)", "0.797 (0.744-0.850)", "0.959 (0.949-0.969)"),
    },
}

_TABLE_16: _Table = {
    "5%": {
        "SL_ImageNet": ("0.543 (0.518-0.568)", "0.815 (0.799-0.831)", "0.305 (0.272-0.338)", "0.567 (0.539-0.594)"),
        "DINOv2": ("0.565 (0.541-0.590)", "0.840 (0.824-0.855)", "0.305 (0.278-0.332)", "0.616 (0.589-0.642)"),
        "SwAVDerm": ("0.541 (0.517-0.565)", "0.809 (0.793-0.825)", "0.272 (0.248-0.297)", "0.565 (0.538-0.593)"),
        "PanDerm": ("0.586 (0.563-0.609)", "0.859 (0.846-0.872)", "0.304 (0.278-0.330)", "0.628 (0.601-0.654)"),
    },
    "10%": {
        "SL_ImageNet": ("0.561 (0.536-0.586)", "0.837 (0.822-0.851)", "0.332 (0.295-0.369)", "0.599 (0.569-0.628)"),
        "DINOv2": ("0.602 (0.577-0.627)", "0.855 (0.840-0.870)", "0.373 (0.329-0.417)", "0.642 (0.614-0.671)"),
        "SwAVDerm": ("0.571 (0.546-0.596)", "0.833 (0.818-0.848)", "0.321 (0.288-0.355)", "0.590 (0.562-0.618)"),
        "PanDerm": ("0.650 (0.626-0.675)", "0.890 (0.877-0.903)", "0.417 (0.374-0.459)", "0.704 (0.678-0.731)"),
    },
    "20%": {
        "SL_ImageNet": ("0.612 (0.587-0.638)", "0.862 (0.849-0.876)", "0.392 (0.346-0.438)", "0.647 (0.619-0.675)"),
        "DINOv2": ("0.614 (0.589-0.638)", "0.872 (0.859-0.886)", "0.374 (0.330-0.418)", "0.667 (0.638-0.695)"),
        "SwAVDerm": ("0.591 (0.566-0.615)", "0.851 (0.836-0.865)", "0.357 (0.318-0.396)", "0.629 (0.601-0.656)"),
        "PanDerm": ("0.681 (0.658-0.704)", "0.910 (0.899-0.921)", "0.434 (0.395-0.473)", "0.735 (0.708-0.761)"),
    },
    "30%": {
        "SL_ImageNet": ("0.613 (0.587-0.639)", "0.866 (0.853-0.880)", "0.426 (0.373-0.478)", "0.663 (0.636-0.690)"),
        "DINOv2": ("0.648 (0.624-0.672)", "0.880 (0.867-0.894)", "0.435 (0.381-0.489)", "0.687 (0.660-0.713)"),
        "SwAVDerm": ("0.610 (0.586-0.635)", "0.861 (0.847-0.875)", "0.343 (0.315-0.372)", "0.639 (0.611-0.668)"),
        "PanDerm": ("0.703 (0.680-0.727)", "0.923 (0.913-0.933)", "0.509 (0.455-0.563)", "0.766 (0.742-0.790)"),
    },
    "50%": {
        "SL_ImageNet": ("0.649 (0.624-0.674)", "0.888 (0.875-0.901)", "0.495 (0.435-0.556)", "0.698 (0.671-0.726)"),
        "DINOv2": ("0.660 (0.636-0.684)", "0.894 (0.883-0.906)", "0.478 (0.424-0.532)", "0.720 (0.695-0.746)"),
        "SwAVDerm": ("0.628 (0.602-0.653)", "0.880 (0.867-0.893)", "0.396 (0.352-0.439)", "0.685 (0.657-0.713)"),
        "PanDerm": ("0.733 (0.709-0.757)", "0.939 (0.930-0.948)", "0.578 (0.521-0.636)", "0.801 (0.778-0.825)"),
    },
    "100%": {
        "SL_ImageNet": ("0.698 (0.673-0.723)", "0.910 (0.898-0.922)", "0.590 (0.539-0.641)", "0.747 (0.722-0.773)"),
        "DINOv2": ("0.705 (0.681-0.729)", "0.923 (0.913-0.933)", "0.565 (0.506-0.624)", "0.774 (0.748-0.800)"),
        "SwAVDerm": ("0.683 (0.659-0.708)", "0.907 (0.895-0.918)", "0.479 (0.428-0.529)", "0.733 (0.707-0.758)"),
        "PanDerm": ("0.767 (0.742-0.791)", "0.951 (0.944-0.959)", "0.647 (0.602-0.692)", "0.843 (0.822-0.864)"),
    },
}

_TABLE_17: _Table = {
    "5%": {
        "SL_ImageNet": ("0.826 (0.802-0.851)", "0.681 (0.593-0.769)", "0.548 (0.502-0.594)", "0.329 (0.214-0.444)"),
        "DINOv2": ("0.825 (0.798-0.853)", "0.706 (0.620-0.791)", "0.553 (0.502-0.605)", "0.331 (0.219-0.444)"),
        "SwAVDerm": ("0.839 (0.812-0.866)", "0.660 (0.567-0.754)", "0.572 (0.518-0.626)", "0.355 (0.231-0.480)"),
        "PanDerm": ("0.842 (0.811-0.874)", "0.749 (0.663-0.834)", "0.594 (0.534-0.654)", "0.431 (0.299-0.562)"),
    },
    "10%": {
        "SL_ImageNet": ("0.858 (0.829-0.888)", "0.784 (0.708-0.861)", "0.622 (0.556-0.688)", "0.470 (0.345-0.595)"),
        "DINOv2": ("0.853 (0.822-0.884)", "0.798 (0.721-0.875)", "0.626 (0.557-0.694)", "0.461 (0.322-0.600)"),
        "SwAVDerm": ("0.858 (0.826-0.889)", "0.732 (0.647-0.816)", "0.653 (0.581-0.725)", "0.390 (0.263-0.517)"),
        "PanDerm": ("0.857 (0.826-0.888)", "0.795 (0.712-0.878)", "0.652 (0.583-0.721)", "0.480 (0.347-0.613)"),
    },
    "20%": {
        "SL_ImageNet": ("0.847 (0.818-0.876)", "0.802 (0.739-0.865)", "0.612 (0.545-0.679)", "0.458 (0.332-0.584)"),
        "DINOv2": ("0.908 (0.879-0.937)", "0.799 (0.726-0.833)", "0.779 (0.708-0.851)", "0.629 (0.500-0.758)"),
        "SwAVDerm": ("0.841 (0.811-0.872)", "0.798 (0.724-0.872)", "0.607 (0.541-0.673)", "0.461 (0.333-0.589)"),
        "PanDerm": ("0.879 (0.848-0.910)", "0.885 (0.839-0.930)", "0.718 (0.644-0.791)", "0.573 (0.443-0.703)"),
    },
    "30%": {
        "SL_ImageNet": ("0.851 (0.821-0.881)", "0.851 (0.794-0.908)", "0.631 (0.561-0.701)", "0.506 (0.384-0.628)"),
        "DINOv2": ("0.869 (0.837-0.902)", "0.854 (0.794-0.914)", "0.709 (0.638-0.781)", "0.580 (0.444-0.715)"),
        "SwAVDerm": ("0.884 (0.854-0.915)", "0.814 (0.745-0.883)", "0.679 (0.609-0.748)", "0.508 (0.372-0.643)"),
        "PanDerm": ("0.874 (0.842-0.906)", "0.899 (0.858-0.939)", "0.731 (0.657-0.805)", "0.601 (0.465-0.737)"),
    },
    "50%": {
        "SL_ImageNet": ("0.872 (0.842-0.903)", "0.839 (0.778-0.899)", "0.679 (0.607-0.752)", "0.524 (0.399-0.650)"),
        "DINOv2": ("0.882 (0.850-0.913)", "0.831 (0.766-0.896)", "0.718 (0.644-0.793)", "0.540 (0.403-0.677)"),
        "SwAVDerm": ("0.873 (0.841-0.904)", "0.820 (0.757-0.883)", "0.687 (0.614-0.760)", "0.515 (0.382-0.648)"),
        "PanDerm": ("0.890 (0.860-0.920)", "0.915 (0.877-0.953)", "0.750 (0.677-0.823)", "0.688 (0.570-0.805)"),
    },
    "100%": {
        "SL_ImageNet": ("0.873 (0.841-0.904)", "0.878 (0.823-0.933)", "0.681 (0.610-0.751)", "0.638 (0.524-0.752)"),
        "DINOv2": ("0.879 (0.848-0.911)", "0.877 (0.820-0.934)", "0.734 (0.659-0.808)", "0.631 (0.507-0.754)"),
        "SwAVDerm": ("0.860 (0.828-0.891)", "0.848 (0.791-0.905)", "0.660 (0.590-0.731)", "0.538 (0.414-0.661)"),
        "PanDerm": ("0.912 (0.884-0.940)", "0.949 (0.922-0.976)", "0.774 (0.700-0.847)", "0.771 (0.660-0.881)"),
    },
}

_TABLE_18: _Table = {
    "5%": {
        "SL_ImageNet": ("0.693 (0.622-0.763)", "0.689 (0.602-0.777)", "0.630 (0.563-0.696)", "0.591 (0.483-0.700)"),
        "DINOv2": ("0.697 (0.632-0.762)", "0.713 (0.625-0.801)", "0.653 (0.580-0.726)", "0.654 (0.546-0.762)"),
        "SwAVDerm": ("0.589 (0.533-0.645)", "0.609 (0.519-0.700)", "0.530 (0.475-0.585)", "0.478 (0.376-0.580)"),
        "PanDerm": ("0.707 (0.642-0.772)", "0.674 (0.587-0.762)", "0.655 (0.585-0.725)", "0.595 (0.495-0.695)"),
    },
    "10%": {
        "SL_ImageNet": ("0.677 (0.610-0.743)", "0.693 (0.607-0.779)", "0.617 (0.551-0.683)", "0.552 (0.444-0.660)"),
        "DINOv2": ("0.722 (0.655-0.788)", "0.771 (0.697-0.845)", "0.683 (0.611-0.755)", "0.673 (0.568-0.777)"),
        "SwAVDerm": ("0.609 (0.544-0.674)", "0.619 (0.526-0.712)", "0.550 (0.477-0.622)", "0.464 (0.367-0.560)"),
        "PanDerm": ("0.738 (0.674-0.802)", "0.785 (0.714-0.856)", "0.682 (0.612-0.753)", "0.666 (0.556-0.777)"),
    },
    "20%": {
        "SL_ImageNet": ("0.672 (0.610-0.734)", "0.738 (0.655-0.821)", "0.608 (0.544-0.672)", "0.601 (0.487-0.716)"),
        "DINOv2": ("0.747 (0.685-0.809)", "0.791 (0.715-0.867)", "0.694 (0.622-0.765)", "0.662 (0.553-0.770)"),
        "SwAVDerm": ("0.634 (0.572-0.697)", "0.641 (0.556-0.725)", "0.574 (0.508-0.640)", "0.489 (0.392-0.586)"),
        "PanDerm": ("0.731 (0.670-0.793)", "0.765 (0.691-0.838)", "0.672 (0.603-0.740)", "0.668 (0.565-0.771)"),
    },
    "30%": {
        "SL_ImageNet": ("0.714 (0.653-0.775)", "0.772 (0.696-0.849)", "0.654 (0.591-0.717)", "0.662 (0.544-0.781)"),
        "DINOv2": ("0.728 (0.663-0.794)", "0.813 (0.746-0.879)", "0.681 (0.609-0.753)", "0.721 (0.629-0.813)"),
        "SwAVDerm": ("0.636 (0.571-0.700)", "0.644 (0.555-0.733)", "0.577 (0.507-0.647)", "0.496 (0.390-0.602)"),
        "PanDerm": ("0.729 (0.666-0.792)", "0.816 (0.751-0.882)", "0.676 (0.604-0.748)", "0.722 (0.628-0.817)"),
    },
    "50%": {
        "SL_ImageNet": ("0.720 (0.655-0.785)", "0.772 (0.703-0.842)", "0.661 (0.593-0.730)", "0.677 (0.574-0.781)"),
        "DINOv2": ("0.726 (0.661-0.792)", "0.810 (0.743-0.877)", "0.675 (0.602-0.747)", "0.722 (0.630-0.813)"),
        "SwAVDerm": ("0.686 (0.617-0.755)", "0.693 (0.610-0.775)", "0.635 (0.562-0.708)", "0.541 (0.436-0.647)"),
        "PanDerm": ("0.741 (0.676-0.806)", "0.804 (0.739-0.870)", "0.687 (0.616-0.758)", "0.716 (0.625-0.808)"),
    },
    "100%": {
        "SL_ImageNet": ("0.754 (0.687-0.822)", "0.810 (0.744-0.875)", "0.703 (0.632-0.774)", "0.704 (0.595-0.813)"),
        "DINOv2": ("0.764 (0.699-0.829)", "0.797 (0.723-0.870)", "0.723 (0.653-0.793)", "0.733 (0.646-0.820)"),
        "SwAVDerm": ("0.747 (0.686-0.809)", "0.777 (0.702-0.853)", "0.696 (0.625-0.767)", "0.660 (0.544-0.776)"),
        "PanDerm": ("0.802 (0.743-0.860)", "0.878 (0.824-0.931)", "0.767 (0.700-0.833)", "0.799 (0.714-0.884)"),
    },
}

_TABLE_19: _Table = {
    "5%": {
        "SL_ImageNet": ("0.566 (0.526-0.605)", "0.803 (0.775-0.832)", "0.395 (0.338-0.452)", "0.598 (0.555-0.641)"),
        "DINOv2": ("0.560 (0.521-0.599)", "0.804 (0.776-0.833)", "0.393 (0.354-0.432)", "0.607 (0.563-0.651)"),
        "SwAVDerm": ("0.468 (0.425-0.510)", "0.695 (0.661-0.729)", "0.328 (0.279-0.378)", "0.485 (0.442-0.528)"),
        "PanDerm": ("0.607 (0.569-0.646)", "0.835 (0.808-0.861)", "0.504 (0.432-0.576)", "0.675 (0.636-0.715)"),
    },
    "10%": {
        "SL_ImageNet": ("0.580 (0.540-0.621)", "0.824 (0.795-0.852)", "0.431 (0.375-0.487)", "0.630 (0.584-0.675)"),
        "DINOv2": ("0.598 (0.557-0.638)", "0.835 (0.810-0.861)", "0.432 (0.388-0.477)", "0.652 (0.608-0.695)"),
        "SwAVDerm": ("0.515 (0.474-0.556)", "0.753 (0.721-0.785)", "0.375 (0.317-0.433)", "0.550 (0.503-0.597)"),
        "PanDerm": ("0.673 (0.632-0.713)", "0.877 (0.854-0.900)", "0.560 (0.490-0.630)", "0.733 (0.691-0.774)"),
    },
    "20%": {
        "SL_ImageNet": ("0.601 (0.561-0.640)", "0.831 (0.803-0.858)", "0.486 (0.415-0.556)", "0.661 (0.616-0.705)"),
        "DINOv2": ("0.621 (0.581-0.661)", "0.843 (0.817-0.869)", "0.472 (0.408-0.536)", "0.678 (0.634-0.723)"),
        "SwAVDerm": ("0.535 (0.494-0.576)", "0.773 (0.742-0.805)", "0.398 (0.341-0.456)", "0.579 (0.535-0.623)"),
        "PanDerm": ("0.685 (0.645-0.726)", "0.882 (0.860-0.904)", "0.598 (0.526-0.670)", "0.740 (0.699-0.781)"),
    },
    "30%": {
        "SL_ImageNet": ("0.639 (0.597-0.681)", "0.854 (0.827-0.880)", "0.493 (0.426-0.560)", "0.702 (0.657-0.747)"),
        "DINOv2": ("0.636 (0.596-0.675)", "0.855 (0.830-0.880)", "0.477 (0.412-0.543)", "0.699 (0.658-0.740)"),
        "SwAVDerm": ("0.577 (0.532-0.621)", "0.806 (0.778-0.835)", "0.461 (0.390-0.532)", "0.624 (0.578-0.671)"),
        "PanDerm": ("0.729 (0.689-0.768)", "0.910 (0.891-0.929)", "0.645 (0.573-0.716)", "0.791 (0.753-0.829)"),
    },
    "50%": {
        "SL_ImageNet": ("0.634 (0.592-0.675)", "0.861 (0.835-0.887)", "0.544 (0.472-0.615)", "0.707 (0.663-0.752)"),
        "DINOv2": ("0.656 (0.614-0.698)", "0.867 (0.840-0.893)", "0.565 (0.494-0.636)", "0.716 (0.675-0.756)"),
        "SwAVDerm": ("0.595 (0.554-0.637)", "0.826 (0.798-0.854)", "0.490 (0.422-0.558)", "0.651 (0.607-0.695)"),
        "PanDerm": ("0.768 (0.730-0.806)", "0.920 (0.900-0.939)", "0.729 (0.665-0.793)", "0.816 (0.777-0.854)"),
    },
    "100%": {
        "SL_ImageNet": ("0.658 (0.617-0.699)", "0.878 (0.854-0.902)", "0.576 (0.504-0.649)", "0.747 (0.707-0.788)"),
        "DINOv2": ("0.695 (0.653-0.737)", "0.880 (0.855-0.905)", "0.575 (0.505-0.646)", "0.747 (0.706-0.787)"),
        "SwAVDerm": ("0.664 (0.624-0.704)", "0.858 (0.833-0.882)", "0.539 (0.473-0.606)", "0.709 (0.667-0.750)"),
        "PanDerm": ("0.758 (0.720-0.796)", "0.931 (0.914-0.947)", "0.710 (0.644-0.776)", "0.844 (0.812-0.876)"),
    },
}

_TABLE_20: _Table = {
    "5%": {
        "SL_ImageNet": ("0.805 (0.799-0.812)", "0.984 (0.983-0.985)", "0.738 (0.711-0.765)", "0.886 (0.880-0.891)"),
        "DINOv2": ("0.835 (0.829-0.841)", "0.986 (0.985-0.987)", "0.756 (0.736-0.776)", "0.905 (0.900-0.909)"),
        "SwAVDerm": ("0.738 (0.731-0.745)", "0.968 (0.966-0.969)", "0.673 (0.647-0.698)", "0.806 (0.799-0.813)"),
        "PanDerm": ("0.867 (0.861-0.872)", "0.991 (0.991-0.992)", "0.844 (0.836-0.853)", "0.931 (0.927-0.935)"),
    },
    "10%": {
        "SL_ImageNet": ("0.831 (0.824-0.837)", "0.988 (0.987-0.988)", "0.789 (0.768-0.809)", "0.908 (0.903-0.913)"),
        "DINOv2": ("0.854 (0.848-0.860)", "0.989 (0.988-0.989)", "0.790 (0.764-0.816)", "0.916 (0.911-0.921)"),
        "SwAVDerm": ("0.773 (0.766-0.780)", "0.975 (0.974-0.976)", "0.704 (0.679-0.729)", "0.842 (0.835-0.849)"),
        "PanDerm": ("0.877 (0.872-0.882)", "0.992 (0.992-0.993)", "0.859 (0.850-0.867)", "0.937 (0.933-0.941)"),
    },
    "20%": {
        "SL_ImageNet": ("0.851 (0.845-0.857)", "0.990 (0.989-0.991)", "0.799 (0.772-0.826)", "0.924 (0.919-0.928)"),
        "DINOv2": ("0.869 (0.863-0.874)", "0.991 (0.990-0.991)", "0.812 (0.787-0.838)", "0.930 (0.926-0.935)"),
        "SwAVDerm": ("0.780 (0.774-0.787)", "0.977 (0.976-0.979)", "0.708 (0.687-0.729)", "0.854 (0.848-0.861)"),
        "PanDerm": ("0.884 (0.879-0.889)", "0.993 (0.993-0.994)", "0.874 (0.866-0.882)", "0.945 (0.942-0.949)"),
    },
    "30%": {
        "SL_ImageNet": ("0.862 (0.857-0.868)", "0.991 (0.990-0.991)", "0.803 (0.778-0.827)", "0.929 (0.925-0.934)"),
        "DINOv2": ("0.879 (0.873-0.884)", "0.992 (0.991-0.992)", "0.827 (0.801-0.852)", "0.937 (0.933-0.941)"),
        "SwAVDerm": ("0.793 (0.786-0.799)", "0.980 (0.978-0.981)", "0.710 (0.702-0.719)", "0.863 (0.857-0.870)"),
        "PanDerm": ("0.896 (0.891-0.901)", "0.994 (0.993-0.994)", "0.866 (0.841-0.891)", "0.947 (0.943-0.951)"),
    },
    "50%": {
        "SL_ImageNet": ("0.865 (0.859-0.871)", "0.991 (0.990-0.992)", "0.809 (0.784-0.833)", "0.931 (0.927-0.935)"),
        "DINOv2": ("0.885 (0.879-0.890)", "0.992 (0.991-0.993)", "0.821 (0.801-0.841)", "0.938 (0.934-0.942)"),
        "SwAVDerm": ("0.798 (0.792-0.805)", "0.981 (0.980-0.982)", "0.718 (0.709-0.727)", "0.871 (0.865-0.877)"),
        "PanDerm": ("0.900 (0.895-0.904)", "0.994 (0.993-0.995)", "0.872 (0.848-0.897)", "0.948 (0.944-0.951)"),
    },
    "100%": {
        "SL_ImageNet": ("0.869 (0.863-0.875)", "0.992 (0.991-0.992)", "0.829 (0.803-0.856)", "0.934 (0.930-0.938)"),
        "DINOv2": ("0.890 (0.885-0.895)", "0.993 (0.992-0.993)", "0.820 (0.813-0.828)", "0.942 (0.938-0.947)"),
        # SwAVDerm: printed as "—" in every column (missing, see the caption)
        "PanDerm": ("0.901 (0.896-0.905)", "0.994 (0.993-0.994)", "0.878 (0.854-0.902)", "0.947 (0.943-0.950)"),
    },
}

_TABLE_11: _Table = {
    "ISIC2018": {
        "SL-Imagenet": ("0.876 (0.870-0.887)", "0.807 (0.799-0.822)"),
        "autoSMIM": ("0.848 (0.845-0.851)", "0.769 (0.766-0.771)"),
        "BATFormer": ("0.884 (0.880-0.889)", "0.815 (0.809-0.823)"),
        "PanDerm": ("0.910 (0.907-0.913)", "0.846 (0.842-0.850)"),
    },
}

_TABLE_12: _Table = {
    "HAM10000": {
        "SL-Imagenet": ("0.927 (0.926-0.929)", "0.875 (0.873-0.878)"),
        "autoSMIM": ("0.920 (0.920-0.921)", "0.865 (0.864-0.866)"),
        "BATFormer": ("0.937 (0.935-0.939)", "0.891 (0.889-0.893)"),
        "PanDerm": ("0.949 (0.949-0.950)", "0.910 (0.908-0.917)"),
    },
}

_TABLE_13: _Table = {
    "ISIC2018": {
        "MedSAM": ("0.904 (0.900-0.911)", "0.841 (0.836-0.848)"),
        "PanDerm": ("0.910 (0.907-0.913)", "0.846 (0.842-0.850)"),
    },
    "HAM10000": {
        "MedSAM": ("0.949 (0.948-0.951)", "0.905 (0.904-0.907)"),
        "PanDerm": ("0.949 (0.949-0.950)", "0.910 (0.908-0.917)"),
    },
}

#: Extended Data Table 21 (PanDerm only): dataset → skin-tone group as printed → (W_F1, Sensitivity).
_TABLE_21: _Table = {
    "F17K": {
        "FST I-II (n=1195)": ("0.825 (0.825-0.825)", "0.835 (0.835-0.835)"),
        "FST III-IV (n=786)": ("0.840 (0.840-0.840)", "0.851 (0.851-0.851)"),
        "FST V-VI (n=238)": ("0.864 (0.864-0.864)", "0.878 (0.878-0.878)"),
    },
    "DDI": {
        "FST I-II (n=40)": ("0.780 (0.780-0.780)", "0.750 (0.750-0.750)"),
        "FST III-IV (n=59)": ("0.818 (0.818-0.818)", "0.814 (0.814-0.814)"),
        "FST V-VI (n=38)": ("0.854 (0.854-0.854)", "0.842 (0.842-0.842)"),
    },
}

#: Extended Data Table 22 (PanDerm only, point estimates): category → subgroup → (n, W_F1, Sensitivity).
_TABLE_22: _Table = {
    "Overall": {
        "All": ("1232", "0.957", "0.959"),
    },
    "Sex": {
        "Female": ("563", "0.963", "0.965"),
        "Male": ("659", "0.951", "0.953"),
    },
    "Location": {
        "Face": ("70", "0.862", "0.871"),
        "Lower extremity": ("240", "0.968", "0.971"),
        "Abdomen": ("126", "0.984", "0.984"),
        "Upper extremity": ("120", "0.967", "0.967"),
        "Back": ("256", "0.919", "0.922"),
        "Trunk": ("259", "0.993", "0.992"),
        "Scalp": ("8", "1.000", "1.000"),
        "Hand": ("18", "1.000", "1.000"),
        "Unknown": ("40", "1.000", "1.000"),
        "Chest": ("33", "0.879", "0.879"),
        "Neck": ("18", "1.000", "1.000"),
        "Foot": ("30", "0.950", "0.967"),
        "Genital": ("8", "1.000", "1.000"),
    },
    "Age": {
        "Old": ("517", "0.923", "0.927"),
        "Medium": ("669", "0.984", "0.984"),
        "Young": ("34", "0.913", "0.941"),
    },
}

# ---------------------------------------------------------------------------------------------
# Turning printed cells into figures, and choosing the strongest baseline
# ---------------------------------------------------------------------------------------------

_CELL = re.compile(r"(\d+(?:\.\d+)?)(?: \((\d+\.\d+)-(\d+\.\d+)\))?")
_N_IN_LABEL = re.compile(r"\(n=(\d+)\)")


def _figure(column: str, cell: str) -> Figure:
    """``"0.926 (0.912-0.940)"`` under column ``W_F1`` → ``Figure("weighted_f1", 0.926, (0.912, 0.940))``."""
    m = _CELL.fullmatch(cell)
    if m is None:
        raise ValueError(f"unreadable printed cell {cell!r} under {column}")
    metric = "n" if column == "n" else PAPER_METRICS[column]
    return Figure(metric, float(m[1]), (float(m[2]), float(m[3])) if m[2] else None)


def _figures(columns: tuple[str, ...], cells: tuple[str, ...]) -> tuple[Figure, ...]:
    if len(columns) != len(cells):
        raise ValueError(f"{len(cells)} cells for columns {columns}")
    return tuple(_figure(c, x) for c, x in zip(columns, cells))


def _values(columns: tuple[str, ...], cells: tuple[str, ...]) -> dict[str, float]:
    return {f.metric: f.value for f in _figures(columns, cells)}


def _rank(columns: tuple[str, ...], cells: tuple[str, ...], primary: str) -> tuple[float, ...]:
    """Primary metric first, then the table's metrics left to right (the tie-breakers)."""
    v = _values(columns, cells)
    return (v[primary], *(v[PAPER_METRICS[c]] for c in columns))


def _strongest(rows: dict[str, tuple[str, ...]], columns: tuple[str, ...], primary: str) -> str:
    """The non-PanDerm model of ``rows`` with the best ``primary`` (first printed on a full tie)."""
    baselines = [m for m in rows if m != "PanDerm"]
    return max(baselines, key=lambda m: _rank(columns, rows[m], primary))


def _curve_strongest(table: _Table, primary: str) -> str:
    """The baseline with the best mean ``primary`` over the percents it has printed."""
    models = [m for m in next(iter(table.values())) if m != "PanDerm"]

    def mean(model: str) -> float:
        vals = [_values(_CLASSIFICATION_COLUMNS, rows[model])[primary] for rows in table.values() if model in rows]
        return sum(vals) / len(vals)

    return max(models, key=mean)


def _percent(label: str) -> float:
    return round(float(label.rstrip("%")) / 100, 4)


def _primary(binary: bool) -> str:
    # Main text and Methods: "weighted F1 score for multi-class datasets and AUROC for binary class datasets".
    return "auroc" if binary else "weighted_f1"


def _layout(binary: bool, *extra: str) -> str:
    return ",".join(("image", "binary_label" if binary else "label", "split", *extra))


def _metric_name(metric: str) -> str:
    return {"weighted_f1": "W_F1", "auroc": "AUROC", "jaccard": "JAC", "dice": "DSC"}.get(metric, metric)


# ---------------------------------------------------------------------------------------------
# Extended Data Table 1: the ten skin-cancer diagnosis datasets
# ---------------------------------------------------------------------------------------------

def _table1(name: str, dataset: str, *, modality: str, binary: bool, title: str, how_to_get: str,
            notes: str = "", kind: str = "probe", protocol: str = _PROBE) -> Benchmark:
    rows = _TABLE_1[dataset]
    primary = _primary(binary)
    baseline = _strongest(rows, _CLASSIFICATION_COLUMNS, primary)
    results = tuple(PaperResult(model, _figures(_CLASSIFICATION_COLUMNS, rows[model]),
                                f"Extended Data Table 1, {model} / {dataset}")
                    for model in ("PanDerm", baseline))
    return Benchmark(name=name, title=title, dataset=dataset, modality=modality, kind=kind, binary=binary,
                     primary_metric=primary, csv_layout=_layout(binary), protocol=protocol,
                     results=results, baseline=baseline, how_to_get=how_to_get, notes=notes)


#: Extended Data Table 1's benchmarks: :func:`_table1`'s arguments per dataset, in the paper's order.
_TABLE1_ENTRIES: tuple[dict, ...] = (
    dict(
        name="pad", dataset="PAD", modality="clinical", binary=False,
        title="PAD-UFES-20, 6-class skin cancer diagnosis on smartphone clinical images (Ext. Data Table 1)",
        how_to_get=("PAD-UFES-20 (Pacheco et al. 2020) is published on Mendeley Data (see the dataset's "
                    "page); the paper's Data availability links a Kaggle copy "
                    "(kaggle.com/datasets/mahdavi1202/skin-cancer). "
                    + _PROCESSED.format(entry="PAD-UFES")
                    + " The release's own example reads pad-ufes/2000.csv with images in pad-ufes/images/."),
        notes=("2,298 close-up clinical images, 6 classes (Methods). Extended Data Table 19's caption calls "
               "PAD 'dermoscopic'; Methods and the dataset itself are smartphone clinical images, so the "
               "modality here is clinical."),
    ),
    dict(
        name="ham10000", dataset="HAM10000", modality="dermoscopy", binary=False,
        title="HAM10000, 7-class pigmented lesion diagnosis on dermoscopy (Ext. Data Table 1)",
        how_to_get=("HAM10000 (Tschandl et al. 2018) is on Harvard Dataverse and in the ISIC 2018 challenge "
                    "data (challenge.isic-archive.com/data/, as in the paper's Data availability); see the "
                    "dataset's page. " + _PROCESSED.format(entry="HAM10000")),
        notes=("Methods: every experiment except the reader study uses the leakage-free 'clean' HAM10000 of "
               "Gröger et al. 2023 (ref. 80; lesions of one patient never straddle splits), split "
               "60/20/20 — the release's processed CSV carries that split; the official ISIC splits will "
               "not give comparable numbers. The 100% point of Extended Data Table 15 (HAM_clean) is a "
               "separate run: PanDerm W_F1 0.922 there vs 0.926 here."),
    ),
    dict(
        name="dermc", dataset="DermC", modality="clinical", binary=True,
        title="Derm7pt clinical images (DermC), melanoma vs others (Ext. Data Table 1)",
        how_to_get=("Derm7pt (Kawahara et al. 2018) from derm.cs.sfu.ca (the paper's Data availability; "
                    "registration required, see the dataset's page). "
                    + _PROCESSED.format(entry="Derm7pt")
                    + " DermC is its clinical-image part ('Derm.C' in Methods)."),
        notes=("Binary melanoma vs other classes, so the probe reads binary_label and the headline metric "
               "is AUROC. The strongest baseline by AUROC is SL_Imagenet (0.797) by 0.001 over DINOV2 "
               "(0.796)."),
    ),
    dict(
        name="bcn20000", dataset="BCN20000", modality="dermoscopy", binary=False,
        title="BCN20000, 9-class dermoscopic lesion diagnosis (Ext. Data Table 1)",
        how_to_get=("BCN20000 (Hernández-Pérez et al. 2024), the ISIC 2019 challenge training data, also on "
                    "figshare (figshare.com/articles/journal_contribution/"
                    "BCN20000_Dermoscopic_Lesions_in_the_Wild/24140028/1, the paper's Data availability). "
                    + _PROCESSED.format(entry="BCN20000")),
        notes=("12,413 dermoscopic images, 9 classes, the leakage-free 'clean' version split 60/20/20 "
               "(Methods). Extended Data Table 16's 100% point is a separate run (PanDerm W_F1 0.767 "
               "there vs 0.772 here)."),
    ),
    dict(
        name="ddi", dataset="DDI", modality="clinical", binary=True,
        title="DDI (Diverse Dermatology Images), melanoma vs others on clinical images (Ext. Data Table 1)",
        how_to_get=("DDI (Daneshjou et al. 2022) from Stanford AIMI after accepting its terms; project page "
                    "ddi-dataset.github.io (the paper's Data availability). "
                    + _PROCESSED.format(entry="DDI")),
        notes=("647 clinical images from the US; the paper groups DDI's classes into melanoma and others "
               "(Methods), so the probe reads binary_label. DDI's own metadata (ddi_metadata.csv) holds the "
               "skin_tone column used by 'ddi-skintone'."),
    ),
    dict(
        name="hiba", dataset="HIBA", modality="dermoscopy", binary=True,
        title="HIBA (ISIC archive), melanoma vs others on dermoscopy (Ext. Data Table 1)",
        how_to_get=("The HIBA collection of the ISIC archive (isic-archive.com; see the archive's collection "
                    "page). " + _PROCESSED.format(entry="HIBA")),
        notes=("1,635 dermoscopic images, melanoma vs other classes (Methods). Extended Data Table 17's "
               "100% point is a separate run (PanDerm AUROC 0.949 there vs 0.948 here)."),
    ),
    dict(
        name="mskcc", dataset="MSKCC", modality="dermoscopy", binary=True,
        title="MSKCC (ISIC archive), melanoma vs others on dermoscopy (Ext. Data Table 1)",
        how_to_get=("The MSKCC collections of the ISIC archive (isic-archive.com; see the archive's "
                    "collection page). " + _PROCESSED.format(entry="MSKCC")),
        notes="8,984 dermoscopic images, melanoma vs other classes (Methods).",
    ),
    dict(
        name="patch16", dataset="PATCH16", modality="pathology", binary=False,
        title="PATCH16, 16-class skin tumour / tissue patch classification on histopathology (Ext. Data Table 1)",
        how_to_get=("Kriegsmann et al. 2022, on heiDATA (heidata.uni-heidelberg.de, "
                    "doi:10.11588/data/7QCR8S, the paper's Data availability). "
                    + _PROCESSED.format(entry="PATCH16")),
        notes=("129,364 patches of 100×100 µm (395×395 px) from 378 slides, 16 classes (4 tumour types, "
               "12 normal structures), stratified 55/15/30 (Methods). The paper's Statistical analysis "
               "derives the CIs of skin tumour patch classification from k-fold cross-validation "
               "(mean ± 1.96·SE over folds), whereas reproduce bootstraps the test split: the point "
               "estimates compare, the CI widths do not."),
    ),
    dict(
        name="isic2024", dataset="ISIC2024", modality="tbp", binary=True, kind="listed",
        protocol=("full fine-tuning (Methods: 'skin cancer detection in ISIC2024' is among the fine-tuned "
                  "tasks): BEiT v2 recipe, cross-entropy, lr 5e-4, 50 epochs with 10 warm-up, best "
                  "validation checkpoint; evaluated on a hold-out of 49,025 TBP crops"),
        title="ISIC2024 (SLICE-3D), skin cancer detection on 3D-TBP lesion crops, fine-tuned (Ext. Data Table 1)",
        how_to_get=("ISIC 2024 challenge / SLICE-3D (Kurtansky et al. 2024): "
                    "kaggle.com/competitions/isic-2024-challenge (the paper's Data availability) and the "
                    "ISIC archive. The PanDerm release ships no processed CSV for it."),
        notes=("Not run by reproduce: the paper fine-tuned the encoder for this task (Methods, 'Fine-tuning "
               "and linear probing'), and its hold-out (49,025 crops from FNQH Cairns, Alfred Hospital and "
               "Melanoma Institute Australia) is not published as a CSV. Approximate it with `panderm "
               "finetune --csv CSV --root IMAGES --binary …` on an institution-held-out split of your own; "
               "`panderm probe --binary` gives a linear-probe figure the paper does not report. PanDerm's "
               "pretraining data include 352,034 ISIC2024 tiles (a subset stratified by institution). "
               "Some CIs are printed as asymmetric or touching the point (SL_Imagenet W_F1 0.877 "
               "(0.873-0.877)); they are kept as printed."),
    ),
    dict(
        name="wsi", dataset="WSI", modality="pathology", binary=True, kind="listed",
        protocol=("slide-level weakly supervised classification: CLAM tissue segmentation, 256×256 patches "
                  "at 20× resized to 224, frozen-encoder patch features, gated ABMIL (512-d embedding, 384 "
                  "hidden, dropout 0.10/0.25), AdamW lr 1e-4, wd 1e-5, cosine, 20 epochs with early "
                  "stopping on validation loss; five-fold label-stratified cross-validation"),
        title="WSI (CPTAC-CM), melanoma vs normal slide classification with ABMIL (Ext. Data Table 1)",
        how_to_get=("The CPTAC-CM (cutaneous melanoma) cohort of the NCI Clinical Proteomic Tumor Analysis "
                    "Consortium, whose slides are distributed through The Cancer Imaging Archive (TCIA, "
                    "ref. 85; see the cohort's page). The paper's Data availability links "
                    "portal.gdc.cancer.gov/projects/TCGA-SKCM instead. The PanDerm release ships no "
                    "processed CSV for it."),
        notes=("Not run by reproduce: it is a slide-level multiple-instance task (302 slides: 71 normal, 231 "
               "tumour; five-fold CV), not a linear probe on images. Approximate it with `panderm slide "
               "tile` → `panderm slide extract` → `panderm slide mil --folds 5` (the same gated ABMIL "
               "recipe). SL_Imagenet and SwaVDerm tie on AUROC (0.989); SL_Imagenet is taken as the "
               "strongest baseline on the next metric, W_F1 (0.945 vs 0.932). CIs above 1 "
               "(e.g. 0.977-1.002) are the paper's mean ± 1.96·SE over folds, kept as printed."),
    ),
)


def _table1_benchmarks() -> list[Benchmark]:
    """The ten datasets of Extended Data Table 1 (:data:`_TABLE1_ENTRIES`)."""
    return [_table1(**entry) for entry in _TABLE1_ENTRIES]


# ---------------------------------------------------------------------------------------------
# Extended Data Tables 15-20: label-efficiency curves
# ---------------------------------------------------------------------------------------------

def _curve(name: str, number: int, table: _Table, dataset: str, table1_dataset: str, *, modality: str,
           binary: bool, title: str, how_to_get: str, notes: str = "") -> Benchmark:
    primary = _primary(binary)
    baseline = _curve_strongest(table, primary)
    percents = tuple(_percent(p) for p in table)
    if percents != _PERCENTS:
        raise ValueError(f"Extended Data Table {number} prints percents {percents}")
    results = tuple(PaperResult(model, _figures(_CLASSIFICATION_COLUMNS, rows[model]),
                                f"Extended Data Table {number}, {model} / {pct}", setting=pct)
                    for model in ("PanDerm", baseline) for pct, rows in table.items())
    label = _metric_name(primary)
    facts = [f"Strongest baseline: {baseline}, the best mean {label} over the six percents."]
    others = []
    for pct, rows in table.items():
        best = _strongest(rows, _CLASSIFICATION_COLUMNS, primary)
        value, ours = (_values(_CLASSIFICATION_COLUMNS, rows[m])[primary] for m in (best, baseline))
        if value > ours:
            others.append(f"{pct} {best} ({value:.3f} vs {ours:.3f})")
    if others:
        facts.append(f"Another baseline beats {baseline} at some percents: {', '.join(others)}.")
    behind = [f"{pct} ({_values(_CLASSIFICATION_COLUMNS, rows['PanDerm'])[primary]:.3f} vs "
              f"{_values(_CLASSIFICATION_COLUMNS, rows[baseline])[primary]:.3f})"
              for pct, rows in table.items()
              if _values(_CLASSIFICATION_COLUMNS, rows["PanDerm"])[primary]
              < _values(_CLASSIFICATION_COLUMNS, rows[baseline])[primary]]
    if behind:
        facts.append(f"PanDerm's {label} is below {baseline}'s at {', '.join(behind)}.")
    full = _values(_CLASSIFICATION_COLUMNS, table["100%"]["PanDerm"])[primary]
    t1 = _values(_CLASSIFICATION_COLUMNS, _TABLE_1[table1_dataset]["PanDerm"])[primary]
    if full != t1:
        facts.append(f"The 100% point is a separate run from Extended Data Table 1 (PanDerm {label} "
                     f"{full:.3f} here vs {t1:.3f} there).")
    facts.append("The paper does not describe its subsampling; the release's --percent_data keeps the first "
                 "⌊n·p⌋ train rows after a shuffle with random_state=42, while `panderm probe --percent-data` "
                 "draws a stratified, seeded subsample, so the small-percent points are not the paper's "
                 "subsamples.")
    return Benchmark(name=name, title=title, dataset=dataset, modality=modality, kind="curve", binary=binary,
                     primary_metric=primary, csv_layout=_layout(binary), protocol=_CURVE, results=results,
                     baseline=baseline, how_to_get=how_to_get,
                     notes=" ".join(([notes] if notes else []) + facts), percents=percents)


def _curve_benchmarks() -> list[Benchmark]:
    same = "The same data and official processed CSV as '{0}' (see its entry)."
    return [
        _curve("ham10000-curve", 15, _TABLE_15, "HAM_clean", "HAM10000", modality="dermoscopy", binary=False,
               title="HAM_clean label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 15)",
               how_to_get=same.format("ham10000"),
               notes="HAM_clean is the leakage-free HAM10000 split of Gröger et al. 2023, as in 'ham10000'."),
        _curve("bcn20000-curve", 16, _TABLE_16, "BCN20000", "BCN20000", modality="dermoscopy", binary=False,
               title="BCN20000 label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 16)",
               how_to_get=same.format("bcn20000")),
        _curve("hiba-curve", 17, _TABLE_17, "HIBA", "HIBA", modality="dermoscopy", binary=True,
               title="HIBA label efficiency, melanoma AUROC at 5–100% of the training labels (Ext. Data Table 17)",
               how_to_get=same.format("hiba")),
        _curve("dermc-curve", 18, _TABLE_18, "DermC", "DermC", modality="clinical", binary=True,
               title="DermC label efficiency, melanoma AUROC at 5–100% of the training labels (Ext. Data Table 18)",
               how_to_get=same.format("dermc")),
        _curve("pad-curve", 19, _TABLE_19, "PAD", "PAD", modality="clinical", binary=False,
               title="PAD-UFES-20 label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 19)",
               how_to_get=same.format("pad"),
               notes="The table's caption says 'dermoscopic'; PAD-UFES-20 is smartphone clinical images."),
        _curve("patch16-curve", 20, _TABLE_20, "PATCH16", "PATCH16", modality="pathology", binary=False,
               title="PATCH16 label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 20)",
               how_to_get=same.format("patch16"),
               notes=("Table 20's caption: 'SwAVDerm results for the 100% setting are missing' (printed as "
                      "'—'); SwAVDerm's mean is taken over the five printed percents."),
               ),
    ]


# ---------------------------------------------------------------------------------------------
# Extended Data Tables 11-13: lesion segmentation
# ---------------------------------------------------------------------------------------------

def _segmentation(name: str, dataset: str, number: int, table: _Table, *, title: str, how_to_get: str,
                  notes: str) -> Benchmark:
    primary = "jaccard"
    own, medsam = table[dataset], _TABLE_13[dataset]
    candidates = {**{m: (number, c) for m, c in own.items()}, "MedSAM": (13, medsam["MedSAM"])}
    baseline = max((m for m in candidates if m != "PanDerm"),
                   key=lambda m: _rank(_SEGMENTATION_COLUMNS, candidates[m][1], primary))
    results = tuple(PaperResult(model, _figures(_SEGMENTATION_COLUMNS, candidates[model][1]),
                                f"Extended Data Table {candidates[model][0]}, {model} / {dataset}")
                    for model in ("PanDerm", baseline))
    return Benchmark(
        name=name, title=title, dataset=dataset, modality="dermoscopy", kind="listed", binary=False,
        primary_metric=primary, csv_layout="image,mask,split",
        protocol=("fine-tuned segmentation (Methods): PanDerm encoder + UperNet decoder, 224×224 inputs, colour "
                  "jitter, rotation and flips, AdamW lr 5e-4, weight decay 0.01, cosine schedule, 100 epochs, "
                  "best validation checkpoint; Dice (DSC) and Jaccard (JAC) on the test split"),
        results=results, baseline=baseline, how_to_get=how_to_get,
        notes=("Not run by reproduce: it fine-tunes a segmentation decoder and the encoder, not a linear probe. "
               "Approximate it with `panderm segment train --csv CSV --root DIR --weights W --epochs 100` then "
               "`panderm segment eval`. The paper's headline comparison is JAC (Results), and the release keeps "
               "the best validation Jaccard, so JAC is the primary metric. The strongest baseline is MedSAM "
               "(Extended Data Table 13, 1024×1024 inputs); the strongest of Table "
               f"{number}'s baselines is BATFormer. The CIs are over five seeded replicas "
               "(Extended Data Fig. 1). " + notes),
    )


def _segmentation_benchmarks() -> list[Benchmark]:
    return [
        _segmentation(
            "isic2018-segmentation", "ISIC2018", 11, _TABLE_11,
            title="ISIC2018 Task 1 lesion segmentation, Dice and Jaccard (Ext. Data Tables 11 and 13)",
            how_to_get=("ISIC 2018 challenge Task 1 images and lesion masks (challenge.isic-archive.com/data/, the "
                        "paper's Data availability). Build the CSV from the official split: 2,594 train, 100 "
                        "val, 1,000 test."),
            notes="PanDerm's row in Table 13 repeats Table 11's (0.910 / 0.846).",
        ),
        _segmentation(
            "ham10000-segmentation", "HAM10000", 12, _TABLE_12,
            title="HAM10000 lesion segmentation, Dice and Jaccard (Ext. Data Tables 12 and 13)",
            how_to_get=("HAM10000 images with the lesion masks published alongside the dataset (Harvard "
                        "Dataverse / ISIC 2018 challenge data; see the dataset's page)."),
            notes=("The paper's split is a random 64/16/20 selection (Methods) that is not published, so the "
                   "test images differ from the paper's. On DSC MedSAM and PanDerm tie at 0.949 "
                   "(Table 13 p = 0.793)."),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Extended Data Tables 21-22: subgroups
# ---------------------------------------------------------------------------------------------

#: For each subgroup entry: the printed setting → (CSV column, value in that column), the value
#: ``None`` where the paper does not define the group in terms of the data (HAM10000's age groups).
SUBGROUP_SETTINGS: dict[str, dict[str, tuple[str, str | None]]] = {
    "ham10000-subgroups": {
        **{f"Sex={s}": ("sex", s.lower()) for s in _TABLE_22["Sex"]},
        **{f"Location={s}": ("localization", s.lower()) for s in _TABLE_22["Location"]},
        **{f"Age={s}": ("age", None) for s in _TABLE_22["Age"]},
    },
    "ddi-skintone": {
        "Skin Tone=FST I-II": ("skin_tone", "12"),
        "Skin Tone=FST III-IV": ("skin_tone", "34"),
        "Skin Tone=FST V-VI": ("skin_tone", "56"),
    },
}


def _subgroup_values(name: str) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((setting, column, value) for setting, (column, value) in SUBGROUP_SETTINGS[name].items())


def _ham10000_subgroups() -> Benchmark:
    columns = ("n", "W_F1", "Sensitivity")
    results = tuple(
        PaperResult("PanDerm", _figures(columns, cells), f"Extended Data Table 22, PanDerm / {category} / {sub}",
                    setting="" if category == "Overall" else f"{category}={sub}")
        for category, rows in _TABLE_22.items() for sub, cells in rows.items())
    return Benchmark(
        name="ham10000-subgroups", dataset="HAM10000", modality="dermoscopy", kind="subgroups", binary=False,
        title="HAM10000 robustness by sex, body location and age, W_F1 and sensitivity (Ext. Data Table 22)",
        primary_metric="weighted_f1", csv_layout=_layout(False, "sex", "localization", "age"),
        protocol=(_PROBE + "; then per-subgroup W_F1 and 'Sensitivity' (support-weighted recall, our "
                  "weighted_recall) of the test predictions, grouped by the CSV's sex, localization and age"),
        results=results, baseline="", subgroup_columns=("sex", "localization", "age"),
        subgroup_values=_subgroup_values("ham10000-subgroups"),
        how_to_get=("As 'ham10000'. The subgroup columns come from HAM10000's own metadata "
                    "(HAM10000_metadata: image_id, sex, localization, age); merge them into the processed CSV "
                    "by image id if it lacks them."),
        notes=("PanDerm only: the table prints no baseline, and only point estimates (no CIs). Each row's "
               "sample size is kept as a Figure with metric 'n'. Settings are 'Category=Subgroup' as printed "
               "('Location=Face'); subgroup_values maps them to CSV columns and "
               "values (HAM10000 writes them in lower case: 'face', 'lower extremity'). The overall row "
               "(n = 1232) has setting ''. The paper does not define its age groups Young / Medium / Old "
               "numerically (their n: 34 / 669 / 517), so the age rows cannot be matched to bins of the "
               "metadata's age column and are shown for reference. The counts do not add up to 1232 (sex "
               "1222, location 1226, age 1220: rows with missing values are left out), and 1232 is not 20% "
               "of 10,015, so check the size of your test split. The overall W_F1 (0.957) differs from "
               "Extended Data Table 1's HAM10000 figure (0.926): the table comes from a different run than "
               "Table 1, so treat it as a robustness profile rather than a target."),
    )


def _skin_tone_results(dataset: str) -> tuple[PaperResult, ...]:
    out = []
    for label, cells in _TABLE_21[dataset].items():
        group = label.split(" (n=")[0]
        n = _N_IN_LABEL.search(label)
        figures = (Figure("n", float(n[1])), *_figures(("W_F1", "Sensitivity"), cells))
        out.append(PaperResult("PanDerm", figures, f"Extended Data Table 21, PanDerm / {dataset} / {label}",
                               setting=f"Skin Tone={group}"))
    return tuple(out)


def _skin_tone_benchmarks() -> list[Benchmark]:
    common = ("PanDerm only (no baseline printed). The printed 95% CIs equal the point estimates ('identical "
              "to point estimate due to single measurement') and are kept as printed. 'Sensitivity' is "
              "support-weighted recall (our weighted_recall). Each group's n, printed in its label, is kept "
              "as a Figure with metric 'n'.")
    return [
        Benchmark(
            name="ddi-skintone", dataset="DDI", modality="clinical", kind="subgroups", binary=True,
            title="DDI by Fitzpatrick skin type (I-II, III-IV, V-VI), W_F1 and sensitivity (Ext. Data Table 21)",
            primary_metric="weighted_f1", csv_layout=_layout(True, "skin_tone"),
            protocol=(_PROBE + "; then per-group W_F1 and support-weighted recall of the test predictions, "
                      "grouped by DDI's skin_tone column"),
            results=_skin_tone_results("DDI"), baseline="", subgroup_columns=("skin_tone",),
            subgroup_values=_subgroup_values("ddi-skintone"),
            how_to_get=("As 'ddi'. skin_tone comes from DDI's own ddi_metadata.csv (values 12, 34, 56 for "
                        "FST I-II, III-IV, V-VI); merge it into the processed CSV by image file name if it "
                        "lacks it."),
            notes=(common + " The paper does not state the DDI task of this table; the binary melanoma-vs-others "
                   "task of Extended Data Table 1 (the only DDI task it defines) is assumed. Its groups total "
                   "137 images, about a fifth of DDI's 647, i.e. a test split. The table prints W_F1 and "
                   "Sensitivity only, so W_F1 is the primary metric here although the task is binary."),
        ),
        Benchmark(
            name="fitzpatrick17k-skintone", dataset="F17K", modality="clinical", kind="listed", binary=False,
            title="Fitzpatrick17k by Fitzpatrick skin type, W_F1 and sensitivity (Ext. Data Table 21)",
            primary_metric="weighted_f1", csv_layout=_layout(False, "fitzpatrick_scale"),
            protocol="linear probe (task, classes and split not stated in the paper), grouped by skin type",
            results=_skin_tone_results("F17K"), baseline="",
            how_to_get=("Fitzpatrick17k (Groh et al. 2021), distributed by its authors as a CSV of image URLs "
                        "with a fitzpatrick_scale column (1-6, -1 unknown); see the dataset's page. The PanDerm "
                        "release ships no processed CSV for it."),
            notes=(common + " Not run by reproduce: the paper does not say which Fitzpatrick17k labels (114 "
                   "conditions, or the 3- or 9-way partitions), which split, or which images it used; its "
                   "groups total 2,219 images. With a CSV of your own, `panderm probe` then `panderm evaluate "
                   "--by fitzpatrick_scale --bins 0.5,2.5,4.5,6.5` gives the same three groups."),
        ),
    ]


def paper_benchmarks() -> list[Benchmark]:
    """The built-in entries of ``panderm reproduce``: the paper's figures on public data.

    In order: the ten datasets of Extended Data Table 1, the six label-efficiency curves
    (Tables 15–20), the two segmentation benchmarks (Tables 11–13) and the subgroup
    analyses (Tables 21–22).
    """
    return [*_table1_benchmarks(), *_curve_benchmarks(), *_segmentation_benchmarks(), _ham10000_subgroups(),
            *_skin_tone_benchmarks()]
