"""Indices into MediaPipe's 468-point face mesh that the solver relies on, in one place.

"Left" and "right" are the person's own (ARKit's convention): for a face seen from the front, the person's right
eye is the one on the image's left (mesh corners 33/133). The mirror pairs and the midline were checked on the
astronaut fixture (each pair's points mirror onto each other within 2 mm on the neutral face).
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 468

MIDLINE: tuple[int, ...] = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15, 16,
                            17, 18, 200, 199, 175, 152)

# (person's right, person's left)
MIRROR_PAIRS: tuple[tuple[int, int], ...] = (
    (33, 263), (133, 362), (159, 386), (145, 374), (158, 385), (153, 380), (160, 387), (144, 373), (157, 384),
    (154, 381), (161, 388), (163, 390), (246, 466), (7, 249), (173, 398), (155, 382),
    (61, 291), (37, 267), (82, 312), (87, 317), (84, 314), (40, 270), (39, 269), (78, 308), (95, 324), (88, 318),
    (178, 402), (80, 310), (81, 311), (191, 415), (185, 409), (146, 375), (91, 321), (181, 405), (76, 306),
    (62, 292), (105, 334), (70, 300), (107, 336), (66, 296), (55, 285), (63, 293), (65, 295), (52, 282), (53, 283),
    (46, 276), (50, 280), (116, 345), (117, 346), (118, 347), (123, 352), (127, 356), (234, 454), (93, 323),
    (132, 361), (58, 288), (172, 397), (136, 365), (150, 379), (149, 378), (176, 400), (148, 377), (67, 297),
    (109, 338), (108, 337), (69, 299), (104, 333), (103, 332), (54, 284), (21, 251), (71, 301), (162, 389),
    (98, 327), (129, 358), (49, 279), (64, 294), (48, 278), (115, 344), (220, 440), (45, 275), (51, 281), (3, 248),
    (196, 419), (174, 399), (236, 456), (198, 420), (131, 360), (205, 425), (187, 411), (147, 376), (213, 433),
    (192, 416), (207, 427), (36, 266), (142, 371), (126, 355), (217, 437), (209, 429), (203, 423), (206, 426),
    (216, 436), (212, 432), (202, 422), (57, 287), (43, 273), (106, 335), (182, 406), (83, 313), (204, 424),
    (211, 431), (32, 262), (208, 428), (135, 364), (138, 367), (214, 434), (210, 430), (169, 394), (170, 395),
    (171, 396), (140, 369), (194, 418), (201, 421),
)


def mirror_map() -> np.ndarray:
    """(468,) partner index of every known point (itself on the midline, -1 where no partner is recorded)."""
    out = -np.ones(N_LANDMARKS, dtype=np.int64)
    for m in MIDLINE:
        out[m] = m
    for a, b in MIRROR_PAIRS:
        out[a], out[b] = b, a
    return out


# Points that move with the skull and barely with expression: forehead, nose bridge and tip, eye corners, temples.
# The head pose is fitted on these alone so a smile or an open jaw does not read as head motion.
STABLE_POINTS: tuple[int, ...] = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,            # forehead and nose (midline)
    109, 338, 108, 337, 67, 297, 69, 299, 104, 333,      # forehead
    33, 263, 133, 362, 173, 398,                         # eye corners
    127, 356, 234, 454, 162, 389, 21, 251,               # temples, sides of the face at the eyes
    196, 419, 174, 399, 3, 248, 236, 456, 51, 281, 45, 275,  # nose sides
)

# Eyes: (inner corner, outer corner, ((upper lid, lower lid), ...) from inner to outer)
RIGHT_EYE = (133, 33, ((158, 153), (159, 145), (160, 144)))
LEFT_EYE = (362, 263, ((385, 380), (386, 374), (387, 373)))
