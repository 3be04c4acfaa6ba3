"""tools/analysis_tools/sweep_scoring.py (mmdet_longtail.evaluation.rescoring)
on the small synthetic set: one setting re-scored from the cache gives
exactly what tools/test.py --cfg-options gives with that setting, and a cache
built for another config / dataset / checkpoint is refused with an error
naming the difference."""
import copy
import glob
import json
import os
import os.path as osp
import pickle
import shutil

import pytest
import torch

from conftest import REPO_ROOT, build_config_model, last_checkpoint
from mmdet_longtail.evaluation import rescoring

CONFIG = 'configs/norcal/faster-rcnn_r18-tiny_fpn_norcal_12e_synthetic-lvis.py'
TOOL = 'analysis_tools/sweep_scoring.py'
# a NorCal gamma and a tau-norm setting, each checked against tools/test.py
GAMMA, TAU = 0.5, 1.0
TEST_PY_OPTIONS = {
    'gamma': [f'model.roi_head.bbox_head.loss_cls.gamma={GAMMA}'],
    'tau': [
        'model.roi_head.bbox_head.cls_predictor_cfg.type=TauNormLinear',
        f'model.roi_head.bbox_head.cls_predictor_cfg.tau={TAU}'
    ],
}


def built_checkpoint(config: str, path: str, data_root: str) -> str:
    """A checkpoint of the config's model as built (seeded): the sweep must
    equal tools/test.py whatever the weights, so no training is needed."""
    from mmengine.config import Config
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    old = os.environ.get('MMLT_SYNTHETIC_ROOT')
    os.environ['MMLT_SYNTHETIC_ROOT'] = data_root
    try:
        cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    finally:
        if old is None:
            del os.environ['MMLT_SYNTHETIC_ROOT']
        else:
            os.environ['MMLT_SYNTHETIC_ROOT'] = old
    torch.manual_seed(1)
    model = build_config_model(cfg)
    model.init_weights()
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


@pytest.fixture(scope='module')
def sweep(run_tool, synthetic_root, tmp_path_factory):
    """A tiny detector as built and one sweep run (cache built now)."""
    root = tmp_path_factory.mktemp('sweep')
    ckpt = built_checkpoint(CONFIG, str(root / 'model.pth'), synthetic_root)
    cache = str(root / 'cache')
    proc = run_tool(TOOL, CONFIG, ckpt, '--cache-dir', cache, '--gamma',
                    '0', str(GAMMA), '--tau', str(TAU),
                    '--dump-predictions', '--cfg-options',
                    'test_dataloader.batch_size=4')
    with open(osp.join(cache, 'sweep_results.json')) as f:
        results = json.load(f)
    return dict(root=root, ckpt=ckpt, cache=cache, stdout=proc.stdout,
                results=results)


def assert_equals_test_py(sweep_metrics: dict, cache: str, k: int,
                          test_work: str, out: str) -> dict:
    """The sweep's setting ``k`` gives tools/test.py's bbox numbers and,
    image by image, its very detections; returns them."""
    (metrics_file, ) = glob.glob(osp.join(test_work, '*', '*.json'))
    with open(metrics_file) as f:
        test_metrics = json.load(f)
    for key in ('AP', 'AP50', 'APr', 'APc', 'APf'):
        assert sweep_metrics[key] == test_metrics[f'lvis/bbox_{key}'], key
    with open(out, 'rb') as f:
        expected = {d['img_id']: d['pred_instances'] for d in pickle.load(f)}
    with open(osp.join(cache, f'predictions_{k:03d}.pkl'), 'rb') as f:
        got = {d['img_id']: d['pred_instances'] for d in pickle.load(f)}
    assert expected.keys() == got.keys()
    # not a vacuous comparison
    assert sum(len(pred['scores']) for pred in got.values()) > 0
    for img_id, pred in expected.items():
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(pred[key], got[img_id][key]), (img_id, key)
    return got


def setting_index(results: dict, **wanted) -> int:
    for k, entry in enumerate(results['settings']):
        if all(entry['setting'][p] == v for p, v in wanted.items()):
            return k
    raise AssertionError(f'no setting {wanted} in {results["settings"]}')


@pytest.mark.parametrize('which', ['gamma', 'tau'])
def test_one_setting_equals_test_py(sweep, run_tool, which):
    base = sweep['results']['settings'][0]['setting']
    wanted = dict(gamma=GAMMA, tau=base['tau']) if which == 'gamma' else \
        dict(gamma=base['gamma'], tau=TAU)
    k = setting_index(sweep['results'], **wanted)

    work = str(sweep['root'] / f'test_{which}')
    out = osp.join(work, 'preds.pkl')
    run_tool.test(CONFIG, sweep['ckpt'], work, '--out', out,
                  cfg_options=TEST_PY_OPTIONS[which])
    sweep_metrics = sweep['results']['settings'][k]['metrics']
    got = assert_equals_test_py(sweep_metrics, sweep['cache'], k, work, out)
    assert all(0 <= sweep_metrics[k] <= 1 or sweep_metrics[k] == -1
               for k in ('AP', 'AP50', 'APr', 'APc', 'APf'))
    # every image has detections
    assert len(got) == 16
    assert all(len(pred['scores']) > 0 for pred in got.values())


def test_sweep_reports_table_plot_and_cost_ratio(sweep):
    stdout = sweep['stdout']
    assert '| setting | AP | APr | APc | APf |' in stdout
    assert f'gamma={GAMMA:g}' in stdout and f'tau={TAU:g}' in stdout
    assert 'of a full test pass (ratio' in stdout
    assert osp.isfile(osp.join(sweep['cache'], 'sweep_scoring.png'))
    results = sweep['results']
    # config setting first, then gamma 0 and 0.5, then tau 1
    assert len(results['settings']) == 4
    assert results['full_pass_seconds']['total'] > 0
    # the config's own setting re-scored == the network pass evaluation
    base_metrics = results['settings'][0]['metrics']
    for key, value in results['config_metrics'].items():
        assert base_metrics[key.split('bbox_')[-1]] == value


def test_cached_run_is_reused_and_foreign_caches_refused(
        sweep, synthetic_root, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    config = osp.join(REPO_ROOT, CONFIG)

    def run(ckpt=sweep['ckpt'], **kwargs):
        return rescoring.sweep_scoring(
            config, ckpt, cache_dir=sweep['cache'], **kwargs).results

    # post-processing changes keep the cache valid: no network pass
    results = run(
        values=dict(score_thr=[0.05]),
        out_dir=str(tmp_path),
        cfg_options={'model.test_cfg.rcnn.max_per_img': 50})
    out = capsys.readouterr().out
    assert 'using the scoring cache' in out
    assert 'running the detector' not in out
    assert [r.setting.score_thr for r in results] == [1e-4, 0.05]

    # a config with another tau reuses the cache too: its logits are
    # recomputed from the cached features (the cache holds tau = 0 logits)
    results = run(
        out_dir=str(tmp_path),
        cfg_options={
            'model.roi_head.bbox_head.cls_predictor_cfg.type':
            'TauNormLinear',
            'model.roi_head.bbox_head.cls_predictor_cfg.tau': TAU
        })
    assert results[0].setting.tau == TAU
    k = setting_index(sweep['results'], tau=TAU)
    assert results[0].metrics == sweep['results']['settings'][k]['metrics']

    with pytest.raises(rescoring.CacheMismatchError) as err:
        run(cfg_options={'model.test_cfg.rpn.max_per_img': 50})
    assert ('model config: differs at model.test_cfg.rpn.max_per_img: '
            'cached 100, now 50') in str(err.value)
    assert '--rebuild-cache' in str(err.value)

    with pytest.raises(rescoring.CacheMismatchError) as err:
        run(cfg_options={
            'test_dataloader.dataset.ann_file':
            'annotations/lvis_v1_train.json'
        })
    message = str(err.value)
    assert ('dataset: differs at test_dataloader.dataset.ann_file: cached '
            "'annotations/lvis_v1_val.json', now "
            "'annotations/lvis_v1_train.json'") in message

    other = str(tmp_path / 'other.pth')
    shutil.copy(sweep['ckpt'], other)
    ckpt = torch.load(other, weights_only=False)
    ckpt['state_dict']['roi_head.bbox_head.fc_cls.bias'] += 1
    torch.save(ckpt, other)
    with pytest.raises(rescoring.CacheMismatchError,
                       match=r'checkpoint: cached .*now .*other\.pth'):
        run(ckpt=other)


def test_sweep_reports_ap_fixed_next_to_ap(sweep, synthetic_root,
                                           monkeypatch, capsys, tmp_path):
    """The metric's ap_fixed / ap_pool reach the sweep's table and json; with
    at most 100 detections per image (under AP's 300) and fewer than 10,000
    per class, fixed AP keeps the same detections as AP, so they agree."""
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    results = rescoring.sweep_scoring(
        osp.join(REPO_ROOT, CONFIG), sweep['ckpt'], cache_dir=sweep['cache'],
        out_dir=str(tmp_path), values=dict(gamma=[GAMMA]),
        cfg_options={'test_evaluator.ap_fixed': True,
                     'test_evaluator.ap_pool': True}).results
    header = capsys.readouterr().out.split('one row per setting:')[1]
    assert ('| setting | AP | APr | APc | APf | AP_fixed | APr_fixed | '
            'APc_fixed | APf_fixed | AP_pool |') in header
    for result in results:
        for item in ('AP', 'APr', 'APc', 'APf'):
            assert result.metrics[f'{item}_fixed'] == result.metrics[item]
        assert 0 <= result.metrics['AP_pool'] <= 1
    assert rescoring.table_metrics(results)[-1] == 'AP_pool'


def test_settings_one_at_a_time_or_grid():
    base = rescoring.Setting(
        gamma=0.6, method='gamma', tau=0.0, alpha=None, score_thr=1e-4)
    one = rescoring.sweep_settings(
        base, dict(gamma=[0.0, 0.6, 1.0], tau=[1.0]), norcal_method='cb')
    assert [(s.gamma, s.method, s.tau) for s in one] == [
        (0.6, 'gamma', 0.0), (0.0, 'cb', 0.0), (0.6, 'cb', 0.0),
        (1.0, 'cb', 0.0), (0.6, 'gamma', 1.0)
    ]
    grid = rescoring.sweep_settings(
        base, dict(gamma=[0.0, 1.0], score_thr=[1e-3, 1e-2]), grid=True)
    assert [(s.gamma, s.score_thr) for s in grid[1:]] == [(0.0, 1e-3),
                                                          (0.0, 1e-2),
                                                          (1.0, 1e-3),
                                                          (1.0, 1e-2)]
    with pytest.raises(ValueError, match='unknown sweep parameters'):
        rescoring.sweep_settings(base, dict(beta=[1.0]))


def test_model_fingerprint_ignores_post_hoc_settings():
    """NorCal gamma, tau, score_thr, NMS and training settings do not change
    what the network computes, so they keep a cache valid; the RPN test
    settings and the architecture do not."""
    from mmengine.config import Config
    base_cfg = Config.fromfile(osp.join(REPO_ROOT, CONFIG))

    def identity(options: dict) -> dict:
        cfg = copy.deepcopy(base_cfg)
        cfg.merge_from_dict(options)
        return rescoring.model_identity(cfg.model)

    reference = identity({})
    for same in [{
            'model.roi_head.bbox_head.loss_cls.gamma': 0.1
    }, {
            'model.roi_head.bbox_head.cls_predictor_cfg':
            dict(type='TauNormLinear', tau=0.7)
    }, {
            'model.test_cfg.rcnn.score_thr': 0.3,
            'model.test_cfg.rcnn.nms.iou_threshold': 0.7
    }, {
            'model.train_cfg.rcnn.sampler.num': 64
    }]:
        assert identity(same) == reference, same
    for different in [{
            'model.test_cfg.rpn.nms_pre': 10
    }, {
            'model.roi_head.bbox_head.fc_out_channels': 64
    }]:
        assert identity(different) != reference, different


TDE_CONFIG = 'configs/tde/faster-rcnn_r18-tiny_fpn_tde_12e_synthetic-lvis.py'


def test_tde_alpha_setting_equals_test_py(run_tool, synthetic_root,
                                          monkeypatch, tmp_path):
    """--alpha re-computes the TDE logits from the cached RoI features; one
    alpha gives exactly what tools/test.py gives with
    test_cfg.rcnn.tde_alpha set to it."""
    work = str(tmp_path / 'train')
    # one epoch: the moving-average feature that TDE needs is non-zero
    run_tool.train(TDE_CONFIG, work)
    ckpt = last_checkpoint(work)
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    cache = str(tmp_path / 'cache')
    # after one epoch every score can fall below the config's threshold;
    # without one, each image keeps its max_per_img best boxes, so the
    # comparison below is never vacuous
    no_threshold = 'model.test_cfg.rcnn.score_thr=0.0'
    results = rescoring.sweep_scoring(
        osp.join(REPO_ROOT, TDE_CONFIG),
        ckpt,
        cache_dir=cache,
        values=dict(alpha=[0.5]),
        dump_predictions=True,
        cfg_options={
            'test_dataloader.batch_size': 4,
            'model.test_cfg.rcnn.score_thr': 0.0
        }).results
    assert [r.setting.alpha for r in results] == [1.5, 0.5]

    test_work = str(tmp_path / 'test')
    out = osp.join(test_work, 'preds.pkl')
    run_tool.test(TDE_CONFIG, ckpt, test_work, '--out', out,
                  cfg_options=['model.test_cfg.rcnn.tde_alpha=0.5',
                               no_threshold])
    got = assert_equals_test_py(results[1].metrics, cache, 1, test_work, out)
    # alpha changes the scores (it is not ignored)
    with open(osp.join(cache, 'predictions_000.pkl'), 'rb') as f:
        base = {d['img_id']: d['pred_instances'] for d in pickle.load(f)}
    assert any(
        base[i]['scores'].shape != got[i]['scores'].shape
        or not torch.equal(base[i]['scores'], got[i]['scores'])
        for i in got)
    # NorCal calibrates a stock softmax head; TDE scores in its own way
    with pytest.raises(ValueError, match='TDEBBoxHead scores in its own'):
        rescoring.sweep_scoring(
            osp.join(REPO_ROOT, TDE_CONFIG),
            ckpt,
            cache_dir=cache,
            values=dict(gamma=[0.5]))


FRACAL_CONFIG = \
    'configs/fracal/faster-rcnn_r18-tiny_fpn_fracal_12e_synthetic-lvis.py'


def test_fracal_settings_equal_test_py(sweep, run_tool, synthetic_root,
                                       monkeypatch, tmp_path):
    """--fractal-lambda / --logit-adjustment set FRACAL's test-time scoring
    settings: a row gives exactly what tools/test.py gives with them."""
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    ckpt = built_checkpoint(FRACAL_CONFIG, str(tmp_path / 'model.pth'),
                            synthetic_root)
    cache = str(tmp_path / 'cache')
    results = rescoring.sweep_scoring(
        osp.join(REPO_ROOT, FRACAL_CONFIG), ckpt, cache_dir=cache,
        values=dict(fractal_lambda=[0.5], logit_adjustment=[0.0]),
        dump_predictions=True,
        cfg_options={'test_dataloader.batch_size': 4}).results
    assert [(r.setting.fractal_lambda, r.setting.logit_adjustment)
            for r in results] == [(2.0, 1.0), (0.5, 1.0), (2.0, 0.0)]
    assert results[1].setting.label().endswith(
        'lambda=0.5, a=1, score_thr=0.0001')

    test_work = str(tmp_path / 'test')
    out = osp.join(test_work, 'preds.pkl')
    run_tool.test(FRACAL_CONFIG, ckpt, test_work, '--out', out,
                  cfg_options=[
                      'model.roi_head.bbox_head.loss_cls.fractal_lambda=0.5'
                  ])
    got = assert_equals_test_py(results[1].metrics, cache, 1, test_work, out)
    with open(osp.join(cache, 'predictions_000.pkl'), 'rb') as f:
        base = {d['img_id']: d['pred_instances'] for d in pickle.load(f)}
    assert any(
        base[i]['scores'].shape != got[i]['scores'].shape
        or not torch.equal(base[i]['scores'], got[i]['scores'])
        for i in got)

    # a head without FRACAL is refused before any network pass
    with pytest.raises(ValueError, match=r'need a last box head .*'
                       r'FRACALLoss.*CalibratedCrossEntropyLoss'):
        rescoring.sweep_scoring(
            osp.join(REPO_ROOT, CONFIG), sweep['ckpt'],
            cache_dir=sweep['cache'], values=dict(fractal_lambda=[1.0]))


def test_scoring_components_are_added_by_config():
    """A setting the model has no component for is given one in the model
    config before building (the same scores): nothing is swapped in a built
    model, and the cache key does not change."""
    from mmengine.config import Config
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO_ROOT, CONFIG))
    cfg.model.roi_head.bbox_head.loss_cls = dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    model_cfg = rescoring.scoring_model_cfg(
        cfg.model, tau=True, norcal=True, norcal_statistics='train.json')
    head = model_cfg.roi_head.bbox_head
    assert head.loss_cls == dict(
        type='CalibratedCrossEntropyLoss',
        loss_weight=1.0,
        num_classes=head.num_classes,
        gamma=0.0,
        class_statistics='train.json')
    assert head.cls_predictor_cfg == dict(type='TauNormLinear', tau=0.0)
    assert cfg.model.roi_head.bbox_head.loss_cls.type == 'CrossEntropyLoss'
    assert rescoring.model_identity(model_cfg) == \
        rescoring.model_identity(cfg.model)

    sigmoid = copy.deepcopy(cfg.model)
    sigmoid.roi_head.bbox_head.loss_cls.use_sigmoid = True
    with pytest.raises(ValueError, match='softmax cross-entropy'):
        rescoring.scoring_model_cfg(sigmoid, tau=False, norcal=True)

    tde = Config.fromfile(osp.join(REPO_ROOT, TDE_CONFIG)).model
    # the TDE head builds its own classifier and scores in its own way
    assert rescoring.scoring_model_cfg(tde, tau=True, norcal=False) == tde
    with pytest.raises(ValueError, match='TDEBBoxHead scores in its own'):
        rescoring.scoring_model_cfg(tde, tau=False, norcal=True)
