"""What a search writes to TensorBoard about its architecture (BUILD_NOTES "TensorBoard and inspection").

Tags (group = the α / β short name: "normal", "reduce1", "stage2", …; see ``layout`` for the line prefixes):

- every ``log_every`` steps: ``zz_alpha/<group>/edge<e>/<op>`` and ``zz_beta/<stage>/n=<length>`` scalars,
  drawn as one chart per edge by the Custom Scalars layout (written once, at the start of a fresh run);
- every epoch: images ``arch/heatmap/<group>`` (``figures.heatmap_figure``; β: ``arch/heatmap/beta``) and
  ``arch/genotype/<cell or stage>`` (``drawing``), scalars ``diagnostics/<name>/<group>`` (``diagnostics``),
  histograms ``alpha_raw/<group>``, text ``alpha_table/<group>`` and the genotype texts of
  ``SummaryLogger.genotype``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from hdas_tf.space import genotypes as gt
from hdas_tf.summaries import diagnostics as diag
from hdas_tf.summaries import layout as lay
from hdas_tf.summaries.drawing import genotype_pngs
from hdas_tf.summaries.figures import beta_figure, figure_png, heatmap_figure
from hdas_tf.summaries.logger import SummaryLogger, edge_softmax_table

_log = logging.getLogger(__name__)


def _image(tag: str, png: bytes, step: int, description: str | None = None) -> None:
    tf.summary.image(tag, tf.image.decode_png(png, channels=3)[None], step=step, description=description)


class SearchBoard:
    """Architecture summaries of one search, written with a ``SummaryLogger``.

    Args:
      logger: the run's SummaryLogger (``RUN_DIR/tb``).
      space: the SearchSpace searched.
      genotype_dir: where the search writes ``epoch_NNN.json`` (``changed_edges`` compares with the previous
        epoch's file, so it survives a resume); None: compare with the previous call only.
      depths_of: ``fn(alpha [edges, ops], n_cells) -> expected depths [n_cells]`` (``search.losses.
        expected_depths`` with the space's window and stage ops); needed for stage searches' depth diagnostic.
      masks: α name → bool [edges, ops] of the ops each edge searches (StacNAS stage 2), or None.
      engine: genotype drawing engine (``drawing.ENGINES``).
    """

    def __init__(self, logger: SummaryLogger, space, genotype_dir: str | None = None,
                 depths_of: Callable | None = None, masks: Mapping | None = None, engine: str = "auto"):
        self.logger, self.space, self.genotype_dir = logger, space, genotype_dir
        self.depths_of, self.masks, self.engine = depths_of, dict(masks or {}), engine
        self._previous: gt.Genotype | None = None
        self._lines_step = None

    def _op_names(self, name: str) -> list[str]:
        return list(self.space.stage_ops if name.startswith("alpha_stage") else self.space.cell_ops)

    def _probs(self, name: str, raw) -> np.ndarray:
        return diag.softmax(raw, self.masks.get(name))

    def write_layout(self, hessian: bool = False) -> None:
        """The Custom Scalars layout (once per run)."""
        lay.write_layout(self.logger.writer, lay.search_layout(self.space, hessian=hessian))

    def alpha_lines(self, step: int, arch: Mapping) -> None:
        """softmax(α) of every edge and op, softmax(β) of every stage, as the scalars the layout's charts draw."""
        if step == self._lines_step:
            return
        self._lines_step = step
        with self.logger.writer.as_default():
            for name, raw in arch.items():
                raw = np.asarray(raw, dtype=np.float64)
                group = lay.short_name(name)
                if name.startswith("beta_"):
                    for n, p in zip(self.space.candidate_lengths, diag.softmax(raw)):
                        tf.summary.scalar(lay.beta_tag(group, n), p, step=step)
                    continue
                mask = self.masks.get(name)
                for e, row in enumerate(self._probs(name, raw)):
                    for o, (op, p) in enumerate(zip(self._op_names(name), row)):
                        if mask is None or mask[e, o]:
                            tf.summary.scalar(lay.alpha_tag(group, e, op), p, step=step)

    def epoch(self, step: int, epoch: int, arch: Mapping, genotype: gt.Genotype,
              extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """The epoch's figures, drawings, tables and diagnostics; returns the diagnostics written (tag →
        value, ``extra`` included: e.g. the Hessian eigenvalue)."""
        self.alpha_lines(step, arch)
        values = dict(self.arch_diagnostics(arch))
        previous = self._previous_genotype(epoch)
        values.update(diag.genotype_diagnostics(genotype, previous, self._searched_parts(genotype)))
        values.update(extra or {})
        self._previous = genotype
        with self.logger.writer.as_default():
            betas = {}
            for name, raw in arch.items():
                raw = np.asarray(raw, dtype=np.float64)
                group = lay.short_name(name)
                if name.startswith("beta_"):
                    betas[group] = diag.softmax(raw)
                    tf.summary.histogram(f"beta_raw/{group}", raw, step=step)
                    continue
                probs, mask = self._probs(name, raw), self.masks.get(name)
                labels = lay.edge_labels(self.space, name)
                fig = heatmap_figure(probs, self._op_names(name), labels, f"softmax(α) {group} — epoch {epoch}",
                                     mask=mask)
                _image(f"arch/heatmap/{group}", figure_png(fig), step,
                       "colour: p − 1/#ops of the row (red above uniform, blue below); printed: p")
                tf.summary.histogram(f"alpha_raw/{group}", raw if mask is None else raw[mask], step=step)
                tf.summary.text(f"alpha_table/{group}", edge_softmax_table(probs, self._op_names(name), labels),
                                step=step)
            if betas:
                fig = beta_figure(betas, self.space.candidate_lengths, f"softmax(β) — epoch {epoch}")
                _image("arch/heatmap/beta", figure_png(fig), step)
            for key, png in genotype_pngs(genotype, self.engine).items():
                _image(f"arch/genotype/{key}", png, step)
            for tag, value in values.items():
                tf.summary.scalar(tag, value, step=step)
        self.logger.genotype(step, genotype)
        for key, skips in diag.normal_skips(genotype, self._searched_cells()).items():
            if skips >= diag.SKIP_WARNING:
                _log.warning("epoch %d: the derived %s cell holds %d skip connections; DARTS-style collapse "
                             "towards parameter-free cells may have begun (see --stop_on_skips)", epoch, key, skips)
        self.logger.flush()
        return values

    def arch_diagnostics(self, arch: Mapping) -> dict[str, float]:
        """α entropy per group and, in a stage search, the expected depth of every stage."""
        out = {}
        for name, raw in arch.items():
            if name.startswith("alpha_"):
                out[f"diagnostics/alpha_entropy/{lay.short_name(name)}"] = diag.alpha_entropy(self._probs(name, raw))
        if self.space.stage != "chain" and self.depths_of is not None:
            for s in range(3):
                alpha = arch["alpha_stage" if self.space.stage == "shared" else f"alpha_stage{s + 1}"]
                beta = arch.get(f"beta_stage{s + 1}")
                out[f"diagnostics/expected_depth/stage{s + 1}"] = diag.expected_stage_depth(
                    lambda n, a=alpha: self.depths_of(a, n), self.space.cells_per_stage[s], beta,
                    self.space.candidate_lengths)
        return out

    def _searched_cells(self) -> list[str]:
        return list(self.space.cell_groups) if self.space.stage == "chain" else []

    def _searched_parts(self, genotype: gt.Genotype) -> list:
        parts = diag.genotype_parts(genotype)
        if self.space.stage == "chain":
            return [(k, p) for k, p in parts if k in self.space.cell_groups]
        return [(k, p) for k, p in parts if k.startswith("stage")]

    def _previous_genotype(self, epoch: int) -> gt.Genotype | None:
        if self.genotype_dir is not None:
            path = os.path.join(self.genotype_dir, f"epoch_{epoch - 1:03d}.json")
            return gt.Genotype.load(path) if epoch > 1 and os.path.exists(path) else None
        return self._previous
