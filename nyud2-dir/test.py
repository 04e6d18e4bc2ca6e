"""The references' evaluation entry point: ``python test.py --eval_model CKPT [--data_dir ./data]``.

Equivalent to ``python train.py --evaluate --resume CKPT``; every other flag of train.py is accepted too.
"""
import sys

from train import main

if __name__ == "__main__":
    main(sys.argv[1:] if "--eval_model" in sys.argv else ["--evaluate", *sys.argv[1:]])
