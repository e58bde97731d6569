"""PPO and its relatives: the training loop.

One step, as in the algorithm (Ouyang et al. 2022; Schulman et al. 2017), every stage one line in
``step`` and timed (``rlcamp.trainer.stages``):

    generate -> (balance) -> reward -> old_log_prob -> ref -> values -> (reward_wait) -> (kl_in_reward)
    -> advantages -> (pf_ppo) -> update_critic -> update_actor -> sync_weights -> (dump)

Which stages run, and how, follows from the config once, when the stages are built; ``fit()`` never
knows how the workers are placed. Building the system: ``rlcamp.trainer.build``.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from rlcamp.algos import make_kl_controller
from rlcamp.config import ResolvedConfig, config_to_dict
from rlcamp.data import PromptLoader, RLDataset
from rlcamp.trainer import checkpoint as ckpt
from rlcamp.trainer.metrics import batch_metrics, timing_metrics
from rlcamp.trainer.faults import NonFiniteGuard, StopSignals
from rlcamp.trainer.profiling import step_windows
from rlcamp.trainer.scoring import Scorer
from rlcamp.trainer.stages import StepState, build_stages
from rlcamp.trainer.tracking import RunInfo, Tracking
from rlcamp.trainer.validation import Validator, prompt_batch


class PPOTrainer:
    def __init__(self, resolved: ResolvedConfig, run_dir: Path, actor_group, critic_group, tokenizer,
                 train_dataset: RLDataset, val_dataset: RLDataset | None, scorer: Scorer,
                 stop: StopSignals | None = None):
        self.stop = stop or StopSignals()  # SIGTERM / SIGINT: stop at the next step boundary, with a checkpoint
        self.config, self.derived, self.run_dir = resolved.config, resolved.derived, run_dir
        self.actor, self.critic, self.tokenizer, self.scorer = actor_group, critic_group, tokenizer, scorer
        c = self.config
        self.loader = PromptLoader(train_dataset, c.data.train_batch_size, pad_token_id=tokenizer.pad_token_id,
                                   shuffle=c.data.shuffle, seed=c.data.seed, num_workers=c.data.dataloader_num_workers)
        self.validator = Validator(c, val_dataset, actor_group, scorer, tokenizer) if val_dataset is not None else None
        kl = c.algorithm.kl_ctrl
        self.kl_ctrl = make_kl_controller(kl.type, kl.kl_coef, kl.target_kl, kl.horizon)
        self.pf_generator = torch.Generator().manual_seed(c.trainer.seed + 3)
        # reward_model.launch_reward_fn_async: scoring runs on this thread while the log-prob stages run
        # and always with the reward loop, whose engine scores while the trainer moves on
        in_background = c.reward_model.launch_reward_fn_async or (scorer.reward_model is not None and
                                                                  c.reward_model.use_reward_loop)
        self.reward_pool = ThreadPoolExecutor(1, "rlcamp-reward") if in_background else None
        self.stages = build_stages(c, self.derived, actor_group, critic_group, scorer, self.reward_pool,
                                   self.kl_ctrl, self.pf_generator, tokenizer)
        # what the step's metrics need to know, resolved once
        self.compare_rollout = self.stages.old_log_prob.recomputed  # bypass_mode: nothing to compare
        self.generates_past_eos = c.actor_rollout_ref.rollout.ignore_eos
        self.global_step = 0
        self.nonfinite = NonFiniteGuard(c.trainer.max_consecutive_nonfinite_steps)
        self.total_steps = self.derived.total_training_steps
        self.timing: dict[str, float] = {}
        self.last_val_metrics: dict[str, float] = {}
        self.tracking: Tracking | None = None
        self.loaded_checkpoint: Path | None = None  # deleted once a newer one exists (del_local_ckpt_after_load)
        # global_profiler: the steps whose stages each enabled role records (rlcamp.trainer.profiling)
        gp = c.global_profiler
        self.profile_starts, self.profile_stops = step_windows(gp.steps if gp.tool else None, gp.profile_continuous_steps)

    @contextmanager
    def _timer(self, stage: str):
        start = time.perf_counter()
        yield
        self.timing[stage] = time.perf_counter() - start

    # -------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        t = self.config.trainer
        info = RunInfo(t.project_name, t.experiment_name, self.run_dir, config_to_dict(self.config), self.total_steps)
        self.tracking = tracking = Tracking(t.logger, info)
        try:
            return self._fit(tracking)
        finally:
            tracking.close()
            self.scorer.close()
            if self.reward_pool is not None:
                self.reward_pool.shutdown(wait=False, cancel_futures=True)

    def validate(self) -> dict[str, float]:
        return self.validator(self.global_step, self.tracking)

    def _fit(self, tracking: Tracking) -> dict[str, float]:
        self.load_checkpoint()
        t = self.config.trainer
        if self.validator is not None and (t.val_only or (t.val_before_train and self.global_step == 0)):
            self.last_val_metrics = self.validate()
            tracking.log(self.last_val_metrics, self.global_step)
            if t.val_only:
                return self.last_val_metrics
        metrics: dict[str, float] = {}
        carried: dict[str, float] = {}  # reported with the next step (the checkpoint time)
        if self.stop.requested and self.global_step < self.total_steps:
            self._stopped(saved=None)
            return metrics
        while self.global_step < self.total_steps:
            for prompts in self.loader:
                self.global_step += 1
                self._profile("profile_start", self.global_step in self.profile_starts, step=self.global_step)
                metrics = self.step(prompts)
                self._profile("profile_stop", self.global_step in self.profile_stops)
                last = self.global_step >= self.total_steps
                test_freq = t.test_freq
                if self.validator is not None and (last or (test_freq > 0 and self.global_step % test_freq == 0)):
                    with self._timer("testing"):
                        self.last_val_metrics = self.validate()
                    metrics.update(self.last_val_metrics)
                    metrics["timing_s/testing"] = self.timing["testing"]
                # the step's metrics are written before its checkpoint: a run killed in between
                # redoes the step and writes it again, instead of resuming past a step never logged
                metrics.update(carried)
                skipped = self.nonfinite.count(metrics)
                tracking.log(metrics, self.global_step)
                carried = {}
                self.nonfinite.check(self.global_step, skipped, lambda: ckpt.latest(self.run_dir))
                saved = None
                if last or (t.save_freq > 0 and self.global_step % t.save_freq == 0):
                    with self._timer("save_checkpoint"):
                        saved = self.save_checkpoint()
                    carried["timing_s/last_save_checkpoint"] = self.timing["save_checkpoint"]
                if last:
                    break
                if self.stop.requested:  # here the loader has not yet taken the next batch: its state is this step's
                    self._stopped(saved or self.save_checkpoint())
                    return metrics
        return metrics

    def _stopped(self, saved: Path | None) -> None:
        """The end of a run stopped by a signal at a step boundary."""
        where = (f"checkpoint {saved}" if saved is not None else
                 "no step trained since " + (f"the checkpoint at step {self.global_step}" if self.global_step
                                             else "the start: nothing to save"))
        print(f"rlcamp: stopped by {self.stop.requested} after step {self.global_step} of {self.total_steps} "
              f"({where}); resume with trainer.resume_mode=auto", flush=True)

    def _profile(self, method: str, now: bool, **kwargs) -> None:
        if not now:
            return
        for group in (self.actor, self.critic):
            if group is not None:
                group.call(method, **kwargs)
        if self.scorer.reward_model is not None:
            getattr(self.scorer.reward_model, method)(**kwargs)

    def _run(self, stage, s: StepState) -> None:
        """One stage, timed as ``timing_s/<its name>``; a stage the config leaves out is None."""
        if stage is None:
            return
        start = time.perf_counter()
        stage(s)
        s.timing[stage.name] = time.perf_counter() - start

    def step(self, prompts: dict) -> dict[str, float]:
        """One PPO step on a batch of prompts; returns its metrics."""
        step_start = time.perf_counter()
        s, st = StepState(prompt_batch(prompts), self.global_step), self.stages
        self._run(st.generate, s)
        self._run(st.balance, s)
        self._run(st.reward, s)
        self._run(st.old_log_prob, s)
        self._run(st.ref, s)
        self._run(st.values, s)
        self._run(st.reward_wait, s)
        self._run(st.kl_in_reward, s)
        self._run(st.advantages, s)
        self._run(st.pf_ppo, s)
        self._run(st.update_critic, s)
        self._run(st.update_actor, s)
        self._run(st.sync_weights, s)
        self._run(st.dump, s)
        s.timing["step"] = time.perf_counter() - step_start
        self.timing = s.timing
        return {**batch_metrics(s.batch, self.config.data.max_prompt_length, compare_rollout=self.compare_rollout),
                **s.metrics, **self.timing_metrics(s), "training/global_step": self.global_step,
                "training/epoch": self.loader.epoch}

    def timing_metrics(self, s: StepState) -> dict[str, float]:
        batch = s.batch
        response_tokens = int(batch["response_mask"].sum().item())
        # with rollout.ignore_eos the engine also generated the tokens after each response's end
        generated = batch["responses"].numel() if self.generates_past_eos else response_tokens
        return timing_metrics(s.timing, response_tokens, int(batch["attention_mask"].sum().item()), generated,
                              self.derived.n_devices)

    def shutdown(self) -> None:
        """Release the worker groups (Ray processes and their placement)."""
        for group in (self.actor, self.critic):
            if group is not None:
                group.shutdown()

    # -------------------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> Path:
        t = self.config.trainer
        ckpt.clear_partial(self.run_dir)
        tmp = self.run_dir / f".global_step_{self.global_step}.tmp"
        try:
            self.actor.call("save_checkpoint", folder=tmp / "actor")  # every rank: sharded state is gathered
            if self.critic is not None:
                self.critic.call("save_checkpoint", folder=tmp / "critic")
            torch.save({"global_step": self.global_step, "loader": self.loader.state_dict(),
                        "kl_ctrl": self.kl_ctrl.state_dict(), "pf_generator": self.pf_generator.get_state(),
                        "nonfinite_in_a_row": self.nonfinite.in_a_row, **ckpt.rng_state()}, tmp / "trainer_state.pt")
            ckpt.write_manifest(tmp)
        except Exception as exc:  # a full disk, a read-only or vanished folder, on any rank
            if getattr(exc, "restartable", False):  # a worker died while saving: trainer.max_restarts handles it
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            previous = ckpt.latest(self.run_dir)
            size = f" (it takes {ckpt.size_mib(previous):.1f} MiB)" if previous is not None else ""
            raise ckpt.CheckpointError(
                f"writing the checkpoint of step {self.global_step} into {tmp} failed ({_last_error_line(exc)}); "
                f"{ckpt.free_space(self.run_dir)} on the disk of {self.run_dir}. The previous checkpoint "
                f"{previous if previous is not None else '(none: this run saved none yet)'} is intact{size}: free "
                "space (trainer.max_actor_ckpt_to_keep / max_critic_ckpt_to_keep bound what the run keeps) or set "
                "trainer.default_local_dir elsewhere, then resume with trainer.resume_mode=auto") from exc
        folder = ckpt.commit(self.run_dir, tmp, self.global_step)
        ckpt.prune(self.run_dir, t.max_actor_ckpt_to_keep, t.max_critic_ckpt_to_keep)
        if self.loaded_checkpoint is not None and self.loaded_checkpoint.resolve() != folder.resolve():
            # del_local_ckpt_after_load: only now, so that the run never lacks a checkpoint to resume from
            shutil.rmtree(self.loaded_checkpoint, ignore_errors=True)
            print(f"deleted {self.loaded_checkpoint} (trainer.del_local_ckpt_after_load; {folder} replaces it)",
                  flush=True)
            self.loaded_checkpoint = None
        return folder

    def load_checkpoint(self) -> None:
        t = self.config.trainer
        folder = ckpt.resume_folder(t.resume_mode, t.resume_from_path, self.run_dir)
        if folder is None:
            return
        self.actor.call("load_checkpoint", folder=folder / "actor")
        if self.critic is not None:
            self.critic.call("load_checkpoint", folder=folder / "critic")
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        self.global_step = state["global_step"]
        self.loader.load_state_dict(state["loader"])
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        self.pf_generator.set_state(state["pf_generator"])
        self.nonfinite.in_a_row = state.get("nonfinite_in_a_row", 0)
        ckpt.set_rng_state(state)
        print(f"resumed from {folder} at step {self.global_step}", flush=True)
        if t.del_local_ckpt_after_load:
            self.loaded_checkpoint = folder


def _last_error_line(exc: BaseException) -> str:
    """The line that says what went wrong: a worker's error arrives as its whole traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or [type(exc).__name__])[-1]
