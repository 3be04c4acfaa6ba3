"""The second wave's classifier losses (IIF, ECM, GOL, the federated loss,
FRACAL) through tools/train.py and tools/test.py once each: the tiny Mask
R-CNN config of the method trains for one epoch on 8 images of the small
synthetic set (2 iterations: the tools' wiring is the point; the probes and
loss tests check the numbers), with the class statistics filled in from its
train file by the LongTailRunner, and its checkpoint tests to the LVIS
table."""
import glob
import os.path as osp

import pytest

from conftest import last_checkpoint

CONFIGS = {
    method: f'configs/{method}/mask-rcnn_r18-tiny_fpn_{method}_12e_'
    'synthetic-lvis.py'
    for method in ('iif', 'ecm', 'gol', 'federated', 'fracal')
}
LOGGED = {
    'iif': ('loss_cls', 'acc'),
    'ecm': ('loss_cls', 'acc_objectness', 'acc_classes'),
    'gol': ('loss_cls', 'acc_classes'),
    'federated': ('loss_cls', 'acc_classes'),
    'fracal': ('loss_cls', 'acc'),
}
# 2 iterations of batch 4 (the train set's first 8 images)
TRAIN_SUBSET = ['train_dataloader.dataset.indices=8']


@pytest.mark.parametrize('method', sorted(CONFIGS))
def test_train_and_test_through_the_tools(run_tool, tmp_path, method):
    work = str(tmp_path / 'work')
    train = run_tool.train(CONFIGS[method], work,
                           cfg_options=TRAIN_SUBSET)
    (log, ) = glob.glob(osp.join(work, '2*', '2*.log'))
    with open(log) as f:
        text = f.read()
    assert 'Epoch(train) [1][2/2]' in text, train.stdout[-2000:]
    for key in LOGGED[method]:
        assert f' {key}: ' in text, (method, key)
    ckpt = last_checkpoint(work)
    test = run_tool.test(CONFIGS[method], ckpt, str(tmp_path / 'test'))
    assert 'LVIS results (%)' in test.stdout
    assert '| segm |' in test.stdout and '| bbox |' in test.stdout
