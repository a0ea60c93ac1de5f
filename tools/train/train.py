"""Train the bundled Fashion-MNIST EViT the way the EViT authors train.

Keep rate 1.0 for the first epochs, then the authors' cosine schedule from
1.0 down to the target keep rate, then the target; fusion on; dropping blocks
at 1/4, 1/2 and 3/4 of the depth (the authors' (3, 6, 9) for depth 12).
Deterministic: fixed seeds, fixed thread count, deterministic algorithms.

    /usr/bin/python3 tools/train/train.py --out models/fashion-mnist

writes model.safetensors (timm tensor names) and config.json (the model card).
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'reference'))
from evit_model import EViT  # noqa: E402
from safetensors_io import write_safetensors  # noqa: E402

DATA = '/usr/share/datasets/fashion-mnist'
LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
          'Ankle boot']
MEAN, STD = 0.2860, 0.3530  # of the training images, in [0, 1] units


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), 'rb') as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalise(u8):
    return (torch.from_numpy(u8.astype(np.float32) / 255.0).unsqueeze(1) - MEAN) / STD


def keep_rate_at(step, steps_per_epoch, shrink_start, shrink_epochs, target):
    """The authors' adjust_keep_rate: 1 until shrink_start, cosine to target over shrink_epochs."""
    if step < shrink_start * steps_per_epoch:
        return 1.0
    t = step - shrink_start * steps_per_epoch
    total = shrink_epochs * steps_per_epoch
    if t >= total:
        return target
    return target + (1.0 - target) * (math.cos(t / total * math.pi) + 1) * 0.5


def lr_at(step, total, warmup, peak, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


def augment(x, gen):
    """Random 2-pixel translation (pad + crop) and horizontal flip, per image."""
    B, _, H, W = x.shape
    padded = F.pad(x, (2, 2, 2, 2), value=(0 - MEAN) / STD)
    dx = torch.randint(0, 5, (B,), generator=gen)
    dy = torch.randint(0, 5, (B,), generator=gen)
    rows = (dy[:, None] + torch.arange(H)[None, :])  # [B, H]
    cols = (dx[:, None] + torch.arange(W)[None, :])  # [B, W]
    out = padded[:, 0][torch.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)
    flip = torch.rand(B, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def evaluate(model, x, y, keep_rate, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch], keep_rate).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True)
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--weight-decay', type=float, default=0.05)
    ap.add_argument('--embed-dim', type=int, default=96)
    ap.add_argument('--depth', type=int, default=8)
    ap.add_argument('--heads', type=int, default=3)
    ap.add_argument('--patch', type=int, default=4)
    ap.add_argument('--keep-rate', type=float, default=0.7)
    ap.add_argument('--shrink-start', type=int, default=1, help='epochs at keep rate 1 before shrinking')
    ap.add_argument('--shrink-epochs', type=int, default=4, help='epochs of the cosine from 1 to --keep-rate')
    ap.add_argument('--no-fuse', action='store_true')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--limit', type=int, default=0, help='train on the first N images only (smoke runs)')
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)

    train_x = normalise(read_idx('train-images-idx3-ubyte.gz'))
    train_y = torch.from_numpy(read_idx('train-labels-idx1-ubyte.gz').astype(np.int64))
    test_x = normalise(read_idx('t10k-images-idx3-ubyte.gz'))
    test_y = torch.from_numpy(read_idx('t10k-labels-idx1-ubyte.gz').astype(np.int64))
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]

    d = args.depth
    drop_loc = (d // 4, d // 2, 3 * d // 4)
    img = train_x.shape[-1]
    model = EViT(img, args.patch, 1, len(LABELS), args.embed_dim, d, args.heads,
                 drop_loc=drop_loc, fuse=not args.no_fuse)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and 'pos_embed' not in n and 'cls_token' not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and 'pos_embed' not in n and 'cls_token' not in n)]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': args.weight_decay},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=args.lr)

    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    started = time.time()
    step = 0
    history = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_x), generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            x = augment(train_x[idx], gen)
            kr = keep_rate_at(step, steps_per_epoch, args.shrink_start, args.shrink_epochs, args.keep_rate)
            for g in opt.param_groups:
                g['lr'] = lr_at(step, total, steps_per_epoch, args.lr, args.lr * 0.01)
            loss = F.cross_entropy(model(x, kr), train_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            step += 1
        acc = evaluate(model, test_x, test_y, args.keep_rate)
        history.append({'epoch': epoch + 1, 'loss': round(loss_sum / steps_per_epoch, 4), 'keepRate': round(kr, 4),
                        'top1AtKeepRate': acc, 'minutes': round((time.time() - started) / 60, 1)})
        print(json.dumps(history[-1]), flush=True)

    dense = evaluate(model, test_x, test_y, 1.0)
    at_keep = evaluate(model, test_x, test_y, args.keep_rate)
    minutes = (time.time() - started) / 60
    os.makedirs(args.out, exist_ok=True)
    tensors = {k: v.detach().contiguous().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    fuse = not args.no_fuse
    write_safetensors(os.path.join(args.out, 'model.safetensors'), tensors, {
        'evit.keep_rate': str(args.keep_rate), 'evit.drop_loc': ','.join(map(str, drop_loc)),
        'evit.fuse': 'true' if fuse else 'false'})
    card = {
        'name': 'evit-fashion-mnist',
        'description': 'A DeiT-style ViT trained with EViT token reorganisation on Fashion-MNIST.',
        'architecture': {'embedDim': args.embed_dim, 'depth': d, 'numHeads': args.heads, 'patchSize': args.patch,
                         'inChans': 1, 'imgSize': img, 'mlpRatio': 4, 'numClasses': len(LABELS)},
        'preprocess': {'imgSize': img, 'resizeSize': img, 'channels': 1, 'mean': [MEAN], 'std': [STD],
                       'interpolation': 'bicubic'},
        'labels': LABELS,
        'schedule': {'keepRate': args.keep_rate, 'dropLoc': list(drop_loc), 'fuse': fuse},
        'training': {
            'dataset': 'Fashion-MNIST (Debian package dataset-fashion-mnist): 60,000 training, 10,000 test images',
            'command': 'tools/train/train.py ' + ' '.join(sys.argv[1:]),
            'epochs': args.epochs, 'batch': args.batch, 'optimizer': 'AdamW', 'lr': args.lr,
            'lrSchedule': 'linear warmup 1 epoch, cosine to 1% of peak',
            'weightDecay': args.weight_decay, 'labelSmoothing': 0.1,
            'augmentation': 'random 2-pixel translation, horizontal flip',
            'keepRateSchedule': f'1.0 for {args.shrink_start} epoch(s), cosine to {args.keep_rate} over '
                                f'{args.shrink_epochs} epochs (the authors\' adjust_keep_rate), then {args.keep_rate}',
            'seed': args.seed, 'threads': args.threads, 'torch': torch.__version__,
            'minutes': round(minutes, 1), 'history': history,
        },
        'accuracy': {'evaluatedBy': 'PyTorch at the end of training, full test set (10,000 images)',
                     'top1Dense': dense, 'top1AtKeepRate': at_keep, 'keepRate': args.keep_rate},
    }
    with open(os.path.join(args.out, 'config.json'), 'w') as f:
        json.dump(card, f, indent=2)
        f.write('\n')
    print(json.dumps({'top1Dense': dense, 'top1AtKeepRate': at_keep, 'minutes': round(minutes, 1)}), flush=True)


if __name__ == '__main__':
    main()
