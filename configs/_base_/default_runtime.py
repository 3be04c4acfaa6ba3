_base_ = 'mmdet::_base_/default_runtime.py'

# registers every mmdet_longtail component into mmdet's registries
custom_imports = dict(imports=['mmdet_longtail'], allow_failed_imports=False)
custom_hooks = [
    dict(type='LongTailNumClassCheckHook'),
    # checkpoints carry the RNG states, so --resume continues exactly
    dict(type='RNGStateHook'),
]
