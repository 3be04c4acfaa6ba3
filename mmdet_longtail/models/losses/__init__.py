from . import (calibrated_ce_loss, ecm_loss, efl_loss, eql_loss,  # noqa
               eqlv2_loss, federated_loss, fracal_loss, gol_loss,
               group_softmax_loss, iif_loss)
