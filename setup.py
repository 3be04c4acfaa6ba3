from setuptools import find_packages, setup


def read_version() -> str:
    scope = {}
    with open('mmdet_longtail/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmdet_longtail',
    version=read_version(),
    description='Long-tailed detection and instance segmentation on LVIS '
    'for MMDetection 3.x',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests',
                                    'benchmarks')),
    python_requires='>=3.8',
    # torch / mmcv need platform-specific installs (tools/setup_env.sh);
    # these are the pure-Python requirements.
    install_requires=[
        'mmengine>=0.11.0rc3,<1.0.0', 'mmdet==3.3.0', 'lvis==0.5.3', 'numpy'
    ],
    license='Apache License 2.0',
    zip_safe=False)
