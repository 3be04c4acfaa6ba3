from . import (acsl_loss, calibrated_ce_loss, ecm_loss, efl_loss,  # noqa
               eql_loss, eqlv2_loss, federated_loss, fracal_loss,
               gol_loss, group_softmax_loss, iif_loss, pcb_loss,
               reweighted_ce_loss)
