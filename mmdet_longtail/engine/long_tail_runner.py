"""The runner that hands the train set's class statistics to the model.

Long-tail components (EQL, BAGS, NorCal, ...) need per-class statistics of the
*train* set when they are built. Configs declare the train set once, in
``train_dataloader.dataset``; :class:`LongTailRunner` reads its annotation
file (``data_root`` joined with ``ann_file``, after ``--cfg-options``) and
gives it to every model component that takes a ``class_statistics`` argument
and was not given one. That is the one route: no config repeats the path, so
changing the train data root or annotation file on the command line reaches
every consumer.
"""
import inspect
from typing import Any, Dict, List, Optional, Union

from mmengine.fileio import join_path
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.utils import is_abs
from torch import nn

from mmdet.registry import MODELS

STATISTICS_ARG = 'class_statistics'
#: the arguments that ``class_statistics`` replaced (EQLoss: ann_file,
#: image_freq; GroupSoftmaxLoss: ann_file, instance_count;
#: CalibratedCrossEntropyLoss: ann_file, class_stats), so that a config or
#: a checkpoint's saved config from before says how to migrate
RETIRED_ARGS = ('ann_file', 'image_freq', 'instance_count', 'class_stats')


def train_annotation_file(dataset_cfg: Optional[dict]) -> Optional[str]:
    """The annotation file of a train dataset config, joined with its
    ``data_root`` as mmengine's ``BaseDataset`` joins them; dataset wrappers
    (``RFSDataset``, ``ClassBalancedDataset``, ``RepeatDataset``, ...) are
    looked through. None when the config names no annotation file."""
    while dataset_cfg is not None and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    if dataset_cfg is None:
        return None
    if 'datasets' in dataset_cfg:
        files = {
            train_annotation_file(cfg)
            for cfg in dataset_cfg['datasets']
        }
        if len(files) != 1:
            raise ValueError(
                f'train_dataloader.dataset concatenates datasets with '
                f'different annotation files {sorted(map(str, files))}; '
                f'give the model components class_statistics explicitly')
        return files.pop()
    ann_file = dataset_cfg.get('ann_file')
    if not ann_file:
        return None
    data_root = dataset_cfg.get('data_root')
    if data_root and not is_abs(ann_file):
        return join_path(data_root, ann_file)
    return ann_file


def takes_class_statistics(module_type: Any) -> bool:
    """Whether a registered model component has a ``class_statistics``
    argument."""
    cls = MODELS.get(module_type) if isinstance(module_type,
                                                str) else module_type
    return inspect.isclass(cls) and \
        STATISTICS_ARG in inspect.signature(cls).parameters


def check_retired_args(component_cfg: dict) -> None:
    """A clear error for the arguments ``class_statistics`` replaced."""
    retired = [arg for arg in RETIRED_ARGS if arg in component_cfg]
    if retired:
        raise ValueError(
            f'{component_cfg["type"]}: {retired} are no longer arguments; '
            f'delete them. The class statistics come from the train '
            f'annotation file of train_dataloader.dataset (LongTailRunner '
            f'fills {STATISTICS_ARG}), or give {STATISTICS_ARG}= a file or '
            f'dict(image_count=..., instance_count=..., num_images=...)')


def fill_class_statistics(model_cfg: Union[dict, list],
                          ann_file: Optional[str]) -> List[str]:
    """Give ``ann_file`` to every component of ``model_cfg`` (in place) that
    takes ``class_statistics`` and has none (with ``ann_file`` None, only
    check them for retired arguments); returns the types given it."""
    filled = []
    if isinstance(model_cfg, (list, tuple)):
        for item in model_cfg:
            filled += fill_class_statistics(item, ann_file)
        return filled
    if not isinstance(model_cfg, dict):
        return filled
    if 'type' in model_cfg and takes_class_statistics(model_cfg['type']):
        check_retired_args(model_cfg)
        if model_cfg.get(STATISTICS_ARG) is None and ann_file:
            model_cfg[STATISTICS_ARG] = ann_file
            filled.append(str(model_cfg['type']))
    for value in model_cfg.values():
        filled += fill_class_statistics(value, ann_file)
    return filled


def give_class_statistics(model_cfg: dict,
                          train_dataloader_cfg: Optional[dict]) -> List[str]:
    """Fill ``class_statistics`` in ``model_cfg`` (in place) from the train
    dataloader config's annotation file, as :class:`LongTailRunner` does;
    returns the types filled. Tools that build a model without the runner
    call this."""
    dataset_cfg = train_dataloader_cfg.get('dataset') if isinstance(
        train_dataloader_cfg, dict) else None
    return fill_class_statistics(model_cfg,
                                 train_annotation_file(dataset_cfg))


@RUNNERS.register_module()
class LongTailRunner(Runner):
    """mmengine's ``Runner`` that builds the model with the class statistics
    of ``train_dataloader.dataset`` (see the module docstring). Configs
    select it with ``runner_type = 'LongTailRunner'`` (the package's
    ``configs/_base_/default_runtime.py`` does)."""

    def build_model(self, model: Union[nn.Module, Dict]) -> nn.Module:
        if isinstance(model, dict):
            filled = give_class_statistics(model, self._train_dataloader)
            # the config saved in checkpoints says where they came from
            if isinstance(self.cfg.get('model'), dict):
                give_class_statistics(self.cfg.model, self._train_dataloader)
            if filled:
                self.logger.info(
                    f'class statistics of {", ".join(sorted(set(filled)))} '
                    f'from the train annotation file of train_dataloader')
        return super().build_model(model)
