_base_ = 'mmdet::_base_/default_runtime.py'

# the class statistics of the long-tail components come from
# train_dataloader.dataset (mmdet_longtail.engine.LongTailRunner)
runner_type = 'LongTailRunner'
# registers every mmdet_longtail component into mmdet's registries
custom_imports = dict(imports=['mmdet_longtail'], allow_failed_imports=False)
custom_hooks = [
    dict(type='LongTailNumClassCheckHook'),
    # checkpoints carry the RNG states, so --resume continues exactly
    dict(type='RNGStateHook'),
]
