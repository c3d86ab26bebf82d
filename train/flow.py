"""Train tree-ensemble fraud classifiers, pick the best, export it for Triton's FIL backend.

DAG (each step's docstring says what it does)::

    start -> preprocess -> train (foreach model family) -> eval (join) -> deploy -> end

The model takes the raw rows (Time, V1..V28, Amount); only SMOTE scales, for its own distances.
The winner is chosen on cross-validated average precision; the test set (the repository's
reference holdout when it has one) is only a report, and the gate against the served version.

Run:  python train/flow.py run [--data PATH|s3://bucket/key] [--models random_forest,xgboost] ...
Help: python train/flow.py run --help
"""

import pandas as pd
import treelite
from metaflow import FlowSpec, Parameter, card, current, resources, step
from metaflow.cards import Image, Markdown, Table

from fraudml import cards, champion
from fraudml.data import (
    DEFAULT_FRAUD_RATE,
    DEFAULT_ROWS,
    DEFAULT_SEED,
    FEATURES,
    dataset_fingerprint,
    describe,
    generate_dataset,
    load_dataset,
    min_positives_for,
    validate_dataset,
)
from fraudml.export import check_export_parity, predict_proba_treelite, to_treelite
from fraudml.features import SPLITS, feature_matrix, labels
from fraudml.lineage import build_lineage
from fraudml.metrics import THRESHOLD_RULES
from fraudml.models import (
    DEFAULT_CV_FOLDS,
    DEFAULT_FAMILIES,
    DEFAULT_N_ITER,
    parse_families,
    pick_best,
    score_family,
    train_family,
)
from fraudml.repository import ModelRepository
from fraudml.rollout import roll_out
from fraudml.tritonconfig import INSTANCE_KINDS, MODEL_FILENAMES


class FraudClassifierTreeSelection(FlowSpec):
    """start -> preprocess -> train (foreach family) -> eval (join) -> deploy -> end (see the module docstring)."""

    data = Parameter(
        "data", default="",
        help="Dataset with the creditcard.csv schema: a local CSV path or an s3://bucket/key URL "
        "(endpoint and credentials from AWS_* variables). Empty: generate a synthetic one in the "
        "flow from --rows, --fraud-rate and --seed.",
    )
    rows = Parameter("rows", default=DEFAULT_ROWS, type=int, help="Rows of the synthetic dataset (284807 = full size); ignored with --data.")
    fraud_rate = Parameter("fraud-rate", default=DEFAULT_FRAUD_RATE, type=float, help="Fraction of frauds in the synthetic dataset; ignored with --data.")
    models = Parameter("models", default=",".join(DEFAULT_FAMILIES), help="Comma-separated model families to train: random_forest, extra_trees, xgboost, lightgbm, hist_gradient_boosting.")
    seed = Parameter("seed", default=DEFAULT_SEED, type=int, help="Seed for data generation, the split, SMOTE, the folds and the models.")
    cv_folds = Parameter("cv-folds", default=DEFAULT_CV_FOLDS, type=int, help="Stratified cross-validation folds in each family's search.")
    n_iter = Parameter("n-iter", default=DEFAULT_N_ITER, type=int, help="Hyperparameter candidates sampled per family.")
    n_jobs = Parameter("n-jobs", default=0, type=int, help="Threads per classifier; 0 = 2 for the forests, 1 for the boosters (the families already train in parallel).")
    test_size = Parameter("test-size", default=0.2, type=float, help="Fraction of rows held out as the untouched test set when the repository has no reference holdout yet.")
    split = Parameter("split", default="time", help="How the test set is split off: time (the newest rows, out of time) or stratified (random, same fraud rate).")
    holdout = Parameter("holdout", default="", help="A labelled CSV (or s3:// URL) to use as the reference holdout when the repository has none yet. Empty: the newest --test-size of the data.")
    promotion_margin = Parameter("promotion-margin", default=champion.DEFAULT_MARGIN, type=float, help="Publish only if the challenger's holdout average precision beats the served version's by at least this.")
    recall_tolerance = Parameter("recall-tolerance", default=champion.DEFAULT_RECALL_TOLERANCE, type=float, help="... and its recall at its threshold is not lower than the served version's by more than this.")
    force_publish = Parameter("force-publish", default=False, type=bool, help="Publish even if the challenger does not beat the served version (recorded as forced).")
    threshold_rule = Parameter("threshold-rule", default="best_f1", help="How the decision threshold is chosen on out-of-fold training scores: best_f1 or precision_target.")
    precision_target = Parameter("precision-target", default=0.9, type=float, help="Precision for --threshold-rule precision_target and for the recall-at-precision metric.")
    model_repo = Parameter("model-repo", default="", help="Triton model repository to publish the winner to (s3://bucket/prefix or a folder). Empty: do not publish.")
    triton_url = Parameter("triton-url", default="", help="Comma-separated Triton HTTP URLs to ask to load the newly published version (needs --model-repo). Empty: none.")
    instance_kind = Parameter("instance-kind", default="KIND_AUTO", help="Triton instance_group kind written to config.pbtxt: KIND_AUTO (a GPU where the pod has one, else the CPU: one repository for the cpu and gpu overlays), KIND_CPU or KIND_GPU.")
    canary_percent = Parameter("canary-percent", default=0, type=int, help="Publish as a canary served by this share (1..100) of the Triton pods; config.pbtxt keeps the served version (python -m serve.models canary --promote | --abort). 0: serve it everywhere.")

    @step
    def start(self):
        """Check the parameters before any work is done."""
        self.families = parse_families(self.models)
        for flag, value, allowed in (("--threshold-rule", self.threshold_rule, THRESHOLD_RULES),
                                     ("--split", self.split, SPLITS), ("--instance-kind", self.instance_kind, INSTANCE_KINDS)):
            if value not in allowed:
                raise ValueError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0.0 < self.precision_target <= 1.0:
            raise ValueError(f"--precision-target must be in (0, 1], got {self.precision_target}")
        if self.n_iter < 1 or self.n_jobs < 0:
            raise ValueError("--n-iter must be >= 1 and --n-jobs >= 0")
        if self.triton_url and not self.model_repo:
            raise ValueError("--triton-url needs --model-repo: there is nothing to load without publishing")
        min_positives_for(self.test_size, self.cv_folds)  # raises on a bad --test-size / --cv-folds
        if self.promotion_margin < 0 or self.recall_tolerance < 0:
            raise ValueError("--promotion-margin and --recall-tolerance must be >= 0")
        if self.model_repo:  # fail now, not after training, if the repository cannot be written
            ModelRepository(self.model_repo).store.check()
        print(f"families: {', '.join(self.families)}")
        self.next(self.preprocess)

    @card(type="blank")
    @step
    def preprocess(self):
        """Load or generate the data, validate and fingerprint it, split off the test set (the reference holdout)."""
        if self.data:
            df = load_dataset(self.data)
            self.dataset_source = self.data
        else:
            df = generate_dataset(self.rows, self.fraud_rate, self.seed)
            self.dataset_source = f"synthetic:rows={self.rows},fraud_rate={self.fraud_rate},seed={self.seed}"
        validate_dataset(df, min_positives=min_positives_for(self.test_size, self.cv_folds))
        self.dataset_fingerprint = dataset_fingerprint(df)
        self.dataset_rows = len(df)
        repo = ModelRepository(self.model_repo) if self.model_repo else None
        train_df, holdout, self.holdout_stored = champion.select_test_set(
            df, repo, self.holdout, by=self.split, test_size=self.test_size, seed=self.seed)
        test_df = holdout.df
        self.holdout_set = holdout  # deploy stores it as the reference when it publishes the first version
        removed = len(df) - len(train_df) - (0 if self.holdout_stored or self.holdout else len(test_df))
        print(f"test set: {holdout.meta['source']}, {holdout.meta['rows']:,} rows, {holdout.meta['frauds']} frauds "
              f"({'the repository reference holdout' if self.holdout_stored else 'new'}, {holdout.fingerprint[:23]}…); "
              f"{len(train_df):,} training rows, {removed:,} holdout rows removed from them")
        self.X_train, self.y_train = feature_matrix(train_df), labels(train_df)
        self.X_test, self.y_test = feature_matrix(test_df), labels(test_df)
        self.test_index = test_df.index.to_numpy()
        self.class_distribution = {"all": describe(df), "train": describe(train_df), "test": describe(test_df)}
        headers, rows = cards.class_distribution_rows(self.class_distribution)
        current.card.append(Markdown(
            f"# Class distribution\n\nsource `{self.dataset_source}`  \n`{self.dataset_fingerprint}`  \n"
            f"test set: {self.holdout_set.meta['source']} `{self.holdout_set.fingerprint}`"))
        current.card.append(Table(rows, headers=headers))
        print(pd.DataFrame(rows, columns=headers).to_string(index=False))
        self.next(self.train, foreach="families")

    @resources(cpu=2, memory=4096)
    @step
    def train(self):
        """Search and fit one model family (SMOTE inside the pipeline, stratified CV, average precision)."""
        self.family = self.input
        self.trained = train_family(self.family, self.X_train, self.y_train, seed=self.seed,
                                    cv_folds=self.cv_folds, n_iter=self.n_iter, n_jobs=self.n_jobs or None)
        print(f"{self.family}: CV average precision {self.trained.cv_average_precision:.4f} "
              f"(+/- {self.trained.cv_average_precision_std:.4f}) in {self.trained.train_seconds:.1f} s, "
              f"best {self.trained.best_params}")
        self.next(self.eval)

    @card(type="blank")
    @step
    def eval(self, inputs):
        """Pick the family with the best cross-validated AP; score every family once on the test set."""
        self.merge_artifacts(inputs, exclude=["family", "trained"])  # the per-branch artifacts
        trained = {inp.family: inp.trained for inp in inputs}
        # Selection uses training folds only; the test set below is a report, never a choice.
        self.best_family = pick_best({f: t.cv_average_precision for f, t in trained.items()})
        self.selection = "highest cross-validated average precision on the training rows"
        scored = {family: score_family(t, self.X_test, self.y_test, self.y_train, rule=self.threshold_rule,
                                       precision_target=self.precision_target) for family, t in trained.items()}
        self.metrics_by_family = {family: m for family, (m, _) in scored.items()}
        self.test_proba_by_family = {family: p for family, (_, p) in scored.items()}
        self.best_pipeline = trained[self.best_family].pipeline
        self.best_params = trained[self.best_family].best_params
        self.metrics = self.metrics_by_family[self.best_family]
        self.threshold = self.metrics["threshold"]

        headers, rows = cards.comparison_rows(self.metrics_by_family, self.best_family)
        cm_headers, cm_rows = cards.confusion_rows(self.metrics["confusion_matrix"])
        figure = cards.pr_curves_figure(self.y_test, self.test_proba_by_family, self.best_family)
        current.card.append(Markdown(
            f"# Model comparison (test set: {self.metrics['n']:,} rows, {self.metrics['n_positive']} frauds)\n\n"
            f"Winner: **{self.best_family}**, chosen by {self.selection}; the test columns are a "
            "report, scored once after the choice, with 95 % bootstrap intervals.  \n"
            f"Threshold {self.threshold:.4f} ({self.threshold_rule}, chosen on out-of-fold training scores)"
        ))
        current.card.append(Table(rows, headers=headers))
        current.card.append(Image.from_matplotlib(figure, label="Precision-recall, all families"))
        current.card.append(Markdown(f"## Confusion matrix of {self.best_family} at threshold {self.threshold:.4f}"))
        current.card.append(Table(cm_rows, headers=cm_headers))
        print(pd.DataFrame(rows, columns=headers).to_string(index=False))
        ap_low, ap_high = self.metrics["intervals"]["average_precision"]
        print(f"winner: {self.best_family} (chosen by {self.selection}: {self.metrics['cv_average_precision']:.4f})\n"
              f"test, for the report: average precision {self.metrics['average_precision']:.4f} "
              f"[{ap_low:.4f}, {ap_high:.4f}]  threshold {self.threshold:.4f}  "
              f"precision {self.metrics['precision']:.3f}  recall {self.metrics['recall']:.3f}")
        self.next(self.deploy)

    @card(type="blank")
    @step
    def deploy(self):
        """Export the winner, check parity on raw test rows; with --model-repo, publish it if it beats the served version."""
        self.model_checkpoint = to_treelite(self.best_pipeline).serialize_bytes()
        # Check the bytes that will be shipped, read back, not the in-memory model.
        exported = treelite.Model.deserialize_bytes(self.model_checkpoint)
        self.export_max_abs_diff = check_export_parity(self.best_pipeline, exported, self.X_test)
        self.model_type = "treelite_checkpoint"
        self.model_filename = MODEL_FILENAMES[self.model_type]
        print(f"exported {self.best_family} as {self.model_filename} ({len(self.model_checkpoint):,} bytes); "
              f"max |P(fraud) diff| vs pipeline on the test set {self.export_max_abs_diff:.2e}")
        self.lineage = build_lineage(
            current.pathspec, __file__, parameters={name: getattr(self, name) for name in current.parameter_names},
            dataset={"fingerprint": self.dataset_fingerprint, "source": self.dataset_source, "rows": self.dataset_rows},
            family=self.best_family, best_params=self.best_params, model_type=self.model_type,
            threshold=self.threshold, metrics=self.metrics, extra={"selection": self.selection, "all_families": {
                f: {"cv_average_precision": m["cv_average_precision"],
                    "test_average_precision": m["average_precision"],
                    "test_average_precision_95ci": m["intervals"]["average_precision"]}
                for f, m in self.metrics_by_family.items()
            }},
        )
        self.model_version, self.promotion = None, None

        if self.model_repo:
            repo = ModelRepository(self.model_repo)
            challenger_proba = predict_proba_treelite(exported, self.X_test)  # X_test: the holdout's rows
            self.promotion = champion.decide(
                repo, self.holdout_set, self.X_train, (challenger_proba, self.threshold),
                margin=self.promotion_margin, recall_tolerance=self.recall_tolerance, force=self.force_publish,
            )
            print(champion.describe_decision(self.promotion))
            self._promotion_card()
            if self.promotion["promoted"]:
                if not self.holdout_stored:  # the first version fixes the reference holdout
                    champion.store_holdout(repo, self.holdout_set)
                self.lineage = {**self.lineage, "holdout": self.holdout_set.meta, "promotion": self.promotion}
                self.model_version = repo.publish(
                    {self.model_filename: self.model_checkpoint}, self.lineage,
                    {"model_type": self.model_type, "threshold": self.threshold,
                     "n_features": len(FEATURES), "instance_kind": self.instance_kind},
                    canary_percent=self.canary_percent or None,
                )
                print(f"published {self.model_repo} fraud-classifier/{self.model_version}")
            else:
                print(f"not promoted: fraud-classifier/{self.promotion['champion_version']} keeps serving")
            champion.record_decision(repo, current.run_id, {
                **self.promotion, "run": f"{current.flow_name}/{current.run_id}",
                "published_version": self.model_version,
            })
            if self.triton_url and self.model_version is not None:
                urls = [u.strip() for u in self.triton_url.split(",") if u.strip()]
                roll_out(repo, urls, self.promotion["champion_version"])
                print(f"loaded fraud-classifier/{self.model_version} on {', '.join(urls)}")
        self.next(self.end)

    def _promotion_card(self):
        p, meta = self.promotion, self.holdout_set.meta
        current.card.append(Markdown(
            f"# Champion / challenger on the reference holdout\n\n**{champion.describe_decision(p)}**  \n"
            f"holdout `{self.holdout_set.fingerprint}` ({meta['rows']:,} rows, {meta['frauds']} frauds; "
            f"{meta['source']}); margin {self.promotion_margin}, recall tolerance {self.recall_tolerance}"))
        rows = [[name, cards.with_interval(s["average_precision"], s["average_precision_95ci"], 4),
                 cards.with_interval(s["recall"], s["recall_95ci"], 3), f"{s['threshold']:.4f}"]
                for name, s in (("challenger (this run)", p.get("challenger")),
                                (f"champion (v{p.get('champion_version')})", p.get("champion"))) if s]
        if rows:
            current.card.append(Table(rows, headers=["model", "holdout AP [95% CI]", "recall [95% CI]", "threshold"]))

    @step
    def end(self):
        """Print how to read this run's results with the Metaflow client."""
        if self.model_version is not None:
            published = f"published as fraud-classifier/{self.model_version} in {self.model_repo}"
        elif self.promotion is not None:
            published = "not promoted: " + self.promotion["reason"]
        else:
            published = "not published (no --model-repo)"
        print(
            f"best model: {self.best_family} (test AP {self.metrics['average_precision']:.4f}), {published}\n"
            "Read the results with the Metaflow client:\n"
            "    from metaflow import Run\n"
            f"    run = Run('{current.flow_name}/{current.run_id}')\n"
            "    run.data.metrics_by_family    # every family's test metrics\n"
            "    run.data.best_pipeline        # the trained imblearn pipeline (predict_proba)\n"
            "    run.data.model_checkpoint     # the Treelite checkpoint bytes; run.data.lineage\n"
            f"Cards: python train/flow.py card get {current.run_id}/eval eval.html "
            f"(or `card view {current.run_id}/eval`, `card server`)"
        )


if __name__ == "__main__":
    FraudClassifierTreeSelection()
