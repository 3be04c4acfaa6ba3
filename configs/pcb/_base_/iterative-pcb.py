# Pairwise Class Balance (He et al., CVPR 2022), as the authors train it:
# the iterative RoI head (one box head, 3 iterations, loss weights
# 0.2 / 0.2 / 0.6, box regression from the last iteration) and the switch
# that turns the PCB term on from epoch 17 of 24 (0-based runner.epoch).
# Helper variables only: a config puts them where they belong.
pcb_roi_head = dict(
    type='IterativeRoIHead',
    num_iterations=3,
    iteration_loss_weights=[0.2, 0.2, 0.6],
    regression_iteration=-1,
    mlp_layers=2,
    mlp_hidden=512,
    use_layer_norm=False)
pcb_switch_epoch = 17
pcb_momentum = 0.99
# the published 2x schedule on LVIS v1 (lr steps at epochs 16 and 22)
pcb_max_epochs = 24
pcb_train_cfg = dict(max_epochs=pcb_max_epochs, val_interval=pcb_max_epochs)
pcb_param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=pcb_max_epochs,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
