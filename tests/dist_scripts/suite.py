"""torchrun --standalone --nproc_per_node 2 suite.py OUT_DIR: ddp_trainer.py then fsdp_loop.py in one launch.

One launch instead of two saves a full import of torch + transformers in both processes.
"""

import sys

import ddp_trainer
import fsdp_loop

if __name__ == "__main__":
    ddp_trainer.main(sys.argv[1])
    fsdp_loop.main(sys.argv[1])
