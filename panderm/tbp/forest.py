"""The measurement model as plain arrays: an ExtraTrees forest saved without any deserialiser that runs code.

Each tree's node arrays go into one safetensors file (``tree.<i>.<field>``); the forest's
parameters and classes go into ``bundle.json`` (``ml.model``). Loading validates every
array (dtype, shape, child and feature indices, finite numbers) and only then rebuilds a
real :class:`sklearn.ensemble.ExtraTreesClassifier` whose ``sklearn.tree._tree.Tree``
objects get a node array of the *installed* scikit-learn's node dtype. A crafted file is
a :class:`~panderm.errors.CheckpointError`, never a crash or an out-of-bounds read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from panderm.errors import CheckpointError

KIND = "ExtraTreesClassifier"
#: Node fields stored per tree, with their dtype in the file (indices and counts as int32 to keep
#: files small; every float stays float64, so predictions are bit-identical). ``missing_go_to_left``
#: is optional.
NODE_FIELDS: dict[str, str] = {
    "left_child": "int32", "right_child": "int32", "feature": "int32", "threshold": "float64",
    "impurity": "float64", "n_node_samples": "int32", "weighted_n_node_samples": "float64",
    "missing_go_to_left": "uint8",
}
OPTIONAL_FIELDS = frozenset({"missing_go_to_left"})
VALUE_FIELD = "value"
#: Forest parameters kept in ``bundle.json`` (information; prediction does not depend on them).
PARAM_NAMES = ("criterion", "max_depth", "min_samples_split", "min_samples_leaf", "min_weight_fraction_leaf",
               "max_features", "max_leaf_nodes", "min_impurity_decrease", "bootstrap", "class_weight",
               "ccp_alpha", "max_samples")
_LEAF, _UNDEFINED = -1, -2

#: JSON schema of ``ml.model`` in ``bundle.json``.
MODEL_SCHEMA = {
    "type": "object",
    "required": ["kind", "n_features", "n_outputs", "classes", "n_trees", "params"],
    "properties": {
        "kind": {"const": KIND},
        "n_features": {"type": "integer", "minimum": 1},
        "n_outputs": {"const": 1},
        "classes": {"const": [0, 1]},
        "n_trees": {"type": "integer", "minimum": 1, "maximum": 100000},
        "params": {"type": "object", "additionalProperties": {"type": ["null", "boolean", "number", "string"]}},
        "sklearn_version": {"type": "string"},
    },
}


def _key(i: int, name: str) -> str:
    return f"tree.{i}.{name}"


def forest_arrays(model) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (for safetensors) and the JSON record (``ml.model``) of a fitted binary ExtraTreesClassifier."""
    import sklearn

    classes = [int(c) for c in model.classes_]
    if type(model).__name__ != KIND or classes != [0, 1] or model.n_outputs_ != 1:
        raise CheckpointError(f"only a binary (0/1) {KIND} can be stored, not {type(model).__name__} "
                              f"with classes {classes}")
    arrays = {}
    for i, est in enumerate(model.estimators_):
        state = est.tree_.__getstate__()
        nodes = state["nodes"]
        if len(nodes) >= np.iinfo(np.int32).max or nodes["n_node_samples"].max() >= np.iinfo(np.int32).max:
            raise CheckpointError(f"tree {i} is too large to store ({len(nodes)} nodes)")
        for name, dtype in NODE_FIELDS.items():
            if name in nodes.dtype.names:
                arrays[_key(i, name)] = np.ascontiguousarray(nodes[name], dtype=dtype)
        arrays[_key(i, VALUE_FIELD)] = np.ascontiguousarray(state["values"], dtype=np.float64)
    params = model.get_params(deep=False)
    record = {"kind": KIND, "n_features": int(model.n_features_in_), "n_outputs": 1, "classes": classes,
              "n_trees": len(model.estimators_), "params": {k: params[k] for k in PARAM_NAMES if k in params},
              "sklearn_version": sklearn.__version__}
    return arrays, record


def save_forest(model, path: str | Path) -> dict:
    """Write the tree arrays of ``model`` to ``path`` (safetensors); returns the JSON record."""
    from safetensors.numpy import save

    arrays, record = forest_arrays(model)
    Path(path).write_bytes(save(arrays))
    return record


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise CheckpointError(f"cannot read the measurement model {path}: not a safetensors file ({exc})",
                              hint="retrain the bundle with `panderm tbp train`") from None


def _check_keys(arrays: dict, n_trees: int, path: Path) -> None:
    allowed = {_key(i, n) for i in range(n_trees) for n in (*NODE_FIELDS, VALUE_FIELD)}
    required = {_key(i, n) for i in range(n_trees) for n in (*NODE_FIELDS, VALUE_FIELD) if n not in OPTIONAL_FIELDS}
    extra, missing = sorted(set(arrays) - allowed), sorted(required - set(arrays))
    if extra or missing:
        what = (f"unexpected arrays {', '.join(extra[:5])}" if extra else "") + \
               ("; " if extra and missing else "") + (f"missing arrays {', '.join(missing[:5])}" if missing else "")
        raise CheckpointError(f"{path} does not match its record in bundle.json ({n_trees} trees): {what}")


def _check_tree(arrays: dict, i: int, n_features: int, path: Path) -> int:
    """Validate tree ``i``'s arrays; returns its depth. Children must come after their parent, once each."""
    where = f"{path} tree {i}"
    n = None
    for name, dtype in NODE_FIELDS.items():
        a = arrays.get(_key(i, name))
        if a is None:
            continue
        if a.dtype != np.dtype(dtype) or a.ndim != 1:
            raise CheckpointError(f"{where}: {name} must be a 1-d {dtype} array, got {a.dtype} {a.shape}")
        if n is None:
            n = len(a)
        if len(a) != n:
            raise CheckpointError(f"{where}: {name} has {len(a)} nodes, other fields {n}")
    if not n:
        raise CheckpointError(f"{where}: the tree has no nodes")
    value = arrays[_key(i, VALUE_FIELD)]
    if value.dtype != np.float64 or value.shape != (n, 1, 2):
        raise CheckpointError(f"{where}: value must be float64 ({n}, 1, 2), got {value.dtype} {value.shape}")
    left, right = arrays[_key(i, "left_child")], arrays[_key(i, "right_child")]
    feature, threshold = arrays[_key(i, "feature")], arrays[_key(i, "threshold")]
    leaf = left == _LEAF
    if not np.array_equal(leaf, right == _LEAF):
        raise CheckpointError(f"{where}: a node has one child only")
    idx = np.arange(n)
    inner = ~leaf
    if np.any(left[inner] <= idx[inner]) or np.any(right[inner] <= idx[inner]) \
            or np.any(left[inner] >= n) or np.any(right[inner] >= n):
        raise CheckpointError(f"{where}: child index out of range (each child must follow its parent, < {n})")
    children = np.concatenate([left[inner], right[inner]])
    if not np.array_equal(np.sort(children), np.arange(1, n)):
        raise CheckpointError(f"{where}: the nodes do not form one tree (a node is shared or unreachable)")
    if np.any((feature[inner] < 0) | (feature[inner] >= n_features)):
        raise CheckpointError(f"{where}: feature index out of range (the model has {n_features} features)")
    if not np.all(np.isfinite(threshold[inner])):
        raise CheckpointError(f"{where}: a split threshold is not a finite number")
    floats = [value, arrays[_key(i, "impurity")], arrays[_key(i, "weighted_n_node_samples")]]
    if not all(np.all(np.isfinite(a)) for a in floats) or np.any(arrays[_key(i, "n_node_samples")] < 0):
        raise CheckpointError(f"{where}: node statistics must be finite and non-negative counts")
    go_left = arrays.get(_key(i, "missing_go_to_left"))
    if go_left is not None and np.any(go_left > 1):
        raise CheckpointError(f"{where}: missing_go_to_left must be 0 or 1")
    depth = np.zeros(n, np.int64)
    for node in np.flatnonzero(inner):  # parents precede children, so one pass suffices
        depth[left[node]] = depth[right[node]] = depth[node] + 1
    return int(depth.max())


def _tree(arrays: dict, i: int, n_features: int, depth: int):
    """A ``sklearn.tree._tree.Tree`` with the installed node dtype, fields filled from the arrays."""
    from sklearn.tree._tree import Tree

    tree = Tree(n_features, np.array([2], dtype=np.intp), 1)
    dtype = tree.__getstate__()["nodes"].dtype
    value = arrays[_key(i, VALUE_FIELD)]
    nodes = np.zeros(len(value), dtype=dtype)
    for name in dtype.names:
        if name not in NODE_FIELDS:
            raise CheckpointError(f"this scikit-learn's trees have a node field {name!r} that panderm does not "
                                  "store", hint="use a scikit-learn version panderm supports")
        stored = arrays.get(_key(i, name))
        if stored is not None:
            nodes[name] = stored
    tree.__setstate__({"max_depth": depth, "node_count": len(value), "nodes": nodes,
                       "values": np.ascontiguousarray(value)})
    return tree


def load_forest(path: str | Path, record: dict):
    """Rebuild the ExtraTreesClassifier stored at ``path`` (see the module docstring).

    Args:
        path: The safetensors file.
        record: ``ml.model`` from ``bundle.json`` (already schema-checked).

    Raises:
        CheckpointError: unreadable file, or arrays that do not form valid trees.
    """
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.tree import ExtraTreeClassifier

    path = Path(path)
    arrays = _read_arrays(path)
    n_trees, n_features = int(record["n_trees"]), int(record["n_features"])
    _check_keys(arrays, n_trees, path)
    classes = np.array([0, 1])
    trees = []
    for i in range(n_trees):
        depth = _check_tree(arrays, i, n_features, path)
        est = ExtraTreeClassifier()
        est.tree_ = _tree(arrays, i, n_features, depth)
        est.n_features_in_, est.n_outputs_, est.classes_, est.n_classes_ = n_features, 1, classes, 2
        est.max_features_ = n_features
        trees.append(est)
    forest = ExtraTreesClassifier(n_estimators=n_trees, n_jobs=1)  # serial: scores do not depend on threads
    forest.estimator_ = ExtraTreeClassifier()
    forest.estimators_ = trees
    forest.n_features_in_, forest.n_outputs_, forest.classes_, forest.n_classes_ = n_features, 1, classes, 2
    return forest
