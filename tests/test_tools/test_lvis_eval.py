"""tools/lvis_eval.py: offline evaluation of result files.

The documented workflow on a real tiny run: a test run writes result files
(single process with the metric, and a 2-process CPU job with
``format_only``); the offline tool's numbers equal the metric's, with both
backends. The run's model is built, not trained: what matters is that the
files the metric writes read back to its numbers, whatever the detections
(non-zero numbers are compared on generated detections below and in
test_analysis_tools.py). Then generated results, prefixes and clear errors.
"""
import glob
import json
import os.path as osp

import pytest
import torch

from conftest import REPO_ROOT

CONFIG = 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'
ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
# an untrained model's scores fall below the config's threshold: keep each
# image's best 20 detections (and masks) instead
TEST_OPTIONS = ['model.test_cfg.rcnn.score_thr=0.0',
                'model.test_cfg.rcnn.max_per_img=20']


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory) -> str:
    """The tiny Mask R-CNN as built (seeded), saved as a checkpoint."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(osp.join(REPO_ROOT, CONFIG)).model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('lvis_eval_model') / 'model.pth')
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def images_with_results(path: str) -> int:
    with open(path) as f:
        return len({d['image_id'] for d in json.load(f)})


def metric_numbers(test_work_dir: str) -> dict:
    """The numbers the metric logged in a test run (full precision)."""
    (path, ) = glob.glob(osp.join(test_work_dir, '2*', '2*.json'))
    with open(path) as f:
        logged = json.load(f)
    return {k: v for k, v in logged.items() if k.startswith('lvis/')}


def offline(run_tool, tmp_path, *args, backend='lvis') -> dict:
    out = str(tmp_path / f'offline_{backend}.json')
    proc = run_tool('lvis_eval.py', *args, '--backend', backend, '--out',
                    out)
    assert 'LVIS results (%)' in proc.stdout
    with open(out) as f:
        return json.load(f)


def test_offline_evaluation_equals_the_metric(run_tool, synthetic_root,
                                              tiny_checkpoint, tmp_path):
    ann = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    # 1 process: the metric evaluates and also writes its result files
    single = str(tmp_path / 'single')
    prefix = osp.join(single, 'results')
    run_tool.test(CONFIG, tiny_checkpoint, single,
                  cfg_options=TEST_OPTIONS +
                  [f'test_evaluator.outfile_prefix={prefix}'])
    logged = metric_numbers(single)
    assert len(logged) == 2 * len(ITEMS)
    # not a degenerate comparison: detections and masks on every image
    for iou_type in ('bbox', 'segm'):
        assert images_with_results(f'{prefix}.{iou_type}.json') == 16
    assert offline(run_tool, tmp_path, prefix, '--ann', ann) == logged
    fast = offline(run_tool, tmp_path, prefix, '--ann', ann, backend='fast')
    assert fast == pytest.approx(logged, abs=1e-9)

    # 2 CPU processes with format_only: no evaluation, files gathered on
    # rank 0, evaluated offline to the same numbers
    dist = str(tmp_path / 'dist')
    dist_prefix = osp.join(dist, 'results')
    proc = run_tool(
        'dist_test.sh', CONFIG, tiny_checkpoint, '2', '--work-dir', dist,
        '--cfg-options', 'test_dataloader.batch_size=4',
        'test_evaluator.format_only=True',
        f'test_evaluator.outfile_prefix={dist_prefix}', *TEST_OPTIONS)
    assert 'results are saved in' in proc.stdout
    assert 'lvis/bbox_AP' not in proc.stdout
    for iou_type in ('bbox', 'segm'):
        assert images_with_results(f'{dist_prefix}.{iou_type}.json') == 16
    assert offline(run_tool, tmp_path, dist_prefix + '.bbox.json',
                   dist_prefix + '.segm.json', '--ann', ann) == logged


def test_generated_results(run_tool, synthetic_root, tmp_path):
    """Numbers equal evaluate_lvis's; the IoU type comes from the name or
    the content."""
    from mmdet_longtail.evaluation import evaluate_lvis
    from synthetic_detections import make_detections
    ann = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    with open(ann) as f:
        gt = json.load(f)
    dets = make_detections(gt, dets_per_image=50, with_masks=True, seed=1)
    # no '.segm.json' suffix: recognised from the 'segmentation' field
    path = str(tmp_path / 'masks.json')
    with open(path, 'w') as f:
        json.dump(dets['segm'], f)
    numbers = offline(run_tool, tmp_path, path, '--ann', ann,
                      backend='fast')
    expected = evaluate_lvis(ann, dets['segm'], 'segm').metrics
    assert set(numbers) == {f'lvis/segm_{k}' for k in ITEMS}
    for k in ITEMS:
        assert numbers[f'lvis/segm_{k}'] == pytest.approx(
            expected[k], abs=1e-9)
    assert 0 < numbers['lvis/segm_AP'] < 1


def test_clear_errors(run_tool, synthetic_root, tmp_path):
    ann = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    bad = str(tmp_path / 'bad.bbox.json')
    with open(bad, 'w') as f:
        json.dump([
            dict(image_id=49, category_id=1, bbox=[0, 0, 5, 5], score=.9),
            dict(image_id=123456, category_id=1, bbox=[0, 0, 5, 5],
                 score=.5)
        ], f)
    proc = run_tool('lvis_eval.py', bad, '--ann', ann, check=False)
    assert proc.returncode == 1
    assert (f'{bad}: result #1 has image_id=123456, which is not an image '
            f'of the annotation file') in proc.stdout
    with open(bad, 'w') as f:
        json.dump([dict(image_id=49, category_id=31, bbox=[0, 0, 5, 5],
                        score=.9)], f)
    proc = run_tool('lvis_eval.py', bad, '--ann', ann, '--backend', 'fast',
                    check=False)
    assert proc.returncode == 1
    assert 'category_id=31, which is not a category' in proc.stdout
    proc = run_tool('lvis_eval.py', str(tmp_path / 'nothing'), '--ann', ann,
                    check=False)
    assert proc.returncode == 1
    assert 'results file not found' in proc.stdout


def test_fixed_and_pooled_ap(run_tool, synthetic_root, tmp_path):
    """--ap-fixed / --ap-pool add the columns and keys of fixed and pooled
    AP (Dave et al. 2021), equal to the library's numbers, for bbox and
    segm; bad files and settings give clear errors."""
    from mmdet_longtail.evaluation.fixed_pool_ap import (evaluate_ap_fixed,
                                                         evaluate_ap_pool)
    from synthetic_detections import make_detections
    ann = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    with open(ann) as f:
        gt = json.load(f)
    dets = make_detections(gt, dets_per_image=50, with_masks=True, seed=1)
    prefix = str(tmp_path / 'results')
    for iou_type in ('bbox', 'segm'):
        with open(f'{prefix}.{iou_type}.json', 'w') as f:
            json.dump(dets[iou_type], f)
    numbers = offline(run_tool, tmp_path, prefix, '--ann', ann, '--ap-fixed',
                      '--ap-pool', '--dets-per-cat', '40', backend='fast')
    extra = ('AP_fixed', 'APr_fixed', 'APc_fixed', 'APf_fixed', 'AP_pool')
    assert set(numbers) == {
        f'lvis/{t}_{k}'
        for t in ('bbox', 'segm') for k in ITEMS + extra
    }
    for iou_type in ('bbox', 'segm'):
        fixed = evaluate_ap_fixed(ann, dets[iou_type], iou_type,
                                  dets_per_cat=40).metrics
        for k in ('AP', 'APr', 'APc', 'APf'):
            assert numbers[f'lvis/{iou_type}_{k}_fixed'] == pytest.approx(
                fixed[k], abs=1e-9)
        assert numbers[f'lvis/{iou_type}_AP_pool'] == pytest.approx(
            evaluate_ap_pool(ann, dets[iou_type], iou_type,
                             dets_per_cat=40), abs=1e-9)
        assert 0 < numbers[f'lvis/{iou_type}_AP_pool'] < 1
    proc = run_tool('lvis_eval.py', prefix + '.bbox.json', '--ann', ann,
                    '--ap-fixed')
    assert '| AP_fixed | APr_fixed | APc_fixed | APf_fixed |' in proc.stdout
    assert 'AP_pool' not in proc.stdout

    bad = str(tmp_path / 'bad.bbox.json')
    with open(bad, 'w') as f:
        json.dump([dict(image_id=49, category_id=1, bbox=[0, 0, 5, 5],
                        score='high')], f)
    proc = run_tool('lvis_eval.py', bad, '--ann', ann, '--ap-fixed',
                    check=False)
    assert proc.returncode == 1
    assert f"{bad}: result #0 has score='high', expected a number" in \
        proc.stdout
    proc = run_tool('lvis_eval.py', prefix, '--ann', ann, '--ap-pool',
                    '--dets-per-cat', '0', check=False)
    assert proc.returncode == 1
    assert '--dets-per-cat must be positive, got 0' in proc.stdout


def test_fixed_ap_through_test_py(run_tool, synthetic_root, tiny_checkpoint,
                                  tmp_path):
    """The README's line: more detections per image, fixed / pooled AP
    logged by the metric, equal to the offline tool on the written files."""
    ann = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    work = str(tmp_path / 'fixed')
    prefix = osp.join(work, 'results')
    proc = run_tool.test(CONFIG, tiny_checkpoint, work, cfg_options=[
        'model.test_cfg.rcnn.max_per_img=150', 'test_evaluator.ap_fixed=True',
        'test_evaluator.ap_pool=True',
        f'test_evaluator.outfile_prefix={prefix}'
    ])
    logged = metric_numbers(work)
    extra = ('AP_fixed', 'APr_fixed', 'APc_fixed', 'APf_fixed', 'AP_pool')
    assert set(logged) == {
        f'lvis/{t}_{k}'
        for t in ('bbox', 'segm') for k in ITEMS + extra
    }
    with open(prefix + '.bbox.json') as f:
        per_image = {}
        for det in json.load(f):
            per_image[det['image_id']] = per_image.get(det['image_id'], 0) + 1
    # more than the config's 100 per image reached the result files
    assert max(per_image.values()) > 100
    # the checkpoint is untrained: the numbers are valid, not necessarily > 0
    assert all(0 <= v <= 1 or v == -1 for v in logged.values())
    offline_numbers = offline(run_tool, tmp_path, prefix, '--ann', ann,
                              '--ap-fixed', '--ap-pool')
    assert offline_numbers == logged
    # tools/test.py prints them in its table
    assert '| APf | AP_fixed | APr_fixed | AP_pool |' in proc.stdout
