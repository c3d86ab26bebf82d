"""Shared, small training data and trained families for the model tests (trained once per session)."""

from collections import namedtuple

import pytest

from fraudml.data import generate_dataset
from fraudml.features import feature_matrix, labels, split_train_test
from fraudml.models import FAMILIES, TrainedFamily, train_family

Split = namedtuple("Split", "X_train y_train X_test y_test")  # float32 rows, int64 labels


@pytest.fixture(scope="session")
def split() -> Split:
    """12,000 rows with 1 % frauds, 25 % held out, raw rows like the flow uses."""
    df = generate_dataset(12_000, 0.01, seed=21)
    train, test = split_train_test(df, test_size=0.25, seed=21)
    return Split(feature_matrix(train), labels(train), feature_matrix(test), labels(test))


TRAIN_KWARGS = dict(seed=0, cv_folds=2, n_iter=1, n_jobs=1)  # what `trained` fits each family with


@pytest.fixture(scope="session")
def trained(split) -> dict[str, TrainedFamily]:
    """Every family, one candidate, 2-fold CV: small but real."""
    return {
        family: train_family(family, split.X_train, split.y_train, **TRAIN_KWARGS)
        for family in FAMILIES
    }
