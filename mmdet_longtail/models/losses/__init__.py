from . import (calibrated_ce_loss, efl_loss, eql_loss, eqlv2_loss,  # noqa
               group_softmax_loss)
from . import federated_loss, fracal_loss  # noqa
from . import acsl_loss, reweighted_ce_loss  # noqa
