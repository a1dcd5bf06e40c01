"""The base of the plugin's hooks: every ClassyHook event a no-op, so that a hook
states only the events it adapts; the config and its typed parameters, read once."""

from typing import Any, Dict, Optional

from classy_vision.hooks.classy_hook import ClassyHook


class VcfHook(ClassyHook):
    def __init__(self, cfg: Any = None, params: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.params = params

    def checkpointed_state(self, task: Any) -> Optional[Dict[str, Any]]:
        """This hook's state in the checkpoint the task resumes from. VISSL saves
        ``task.get_classy_state()`` (hooks included) in every checkpoint, but its
        ``SelfSupervisionTask._set_classy_state`` does not hand hook states back on
        resume: hooks restore theirs from here in ``on_start``."""
        checkpoint = getattr(task, "checkpoint", None) or {}
        return checkpoint.get("classy_state_dict", {}).get("hooks", {}).get(self.name())

    on_start = ClassyHook._noop
    on_phase_start = ClassyHook._noop
    on_forward = ClassyHook._noop
    on_loss_and_meter = ClassyHook._noop
    on_backward = ClassyHook._noop
    on_update = ClassyHook._noop
    on_step = ClassyHook._noop
    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop
