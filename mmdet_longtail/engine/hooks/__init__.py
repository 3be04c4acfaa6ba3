from .num_class_check_hook import (LongTailNumClassCheckHook,
                                   check_num_classes)

__all__ = ['LongTailNumClassCheckHook', 'check_num_classes']
