; Small ePix10k-like detector for the PADT artefact simulator (photonflow.simulate.padt):
; four ASICs of 176 (ss) x 192 (fs) pixels of 100 um, 2 x 2 round the beam, 10-pixel gaps,
; clen 27 mm at 9.5 keV: the water ring (q = 20 /nm, radius ~120 px) crosses every ASIC.
; Made by photonflow.simulate.padt.epix_detector(). PADT benchmark ROI: panel p0, slab [0:176, 0:192].
; CrystFEL geometry written by photonflow.io.geom.write_geometry
; 4 panels, slab 352 (ss) x 384 (fs) pixels
photon_energy = 9500
peak_list = /entry_1/result_1

res = 10000
clen = 0.027
coffset = 0
adu_per_photon = 1
data = /entry_1/data_1/data
dim0 = %
dim1 = ss
dim2 = fs

p0/min_fs = 0
p0/max_fs = 191
p0/min_ss = 0
p0/max_ss = 175
p0/corner_x = -197.3
p0/corner_y = -181.4
p0/fs = +1x +0y
p0/ss = +0x +1y

p1/min_fs = 192
p1/max_fs = 383
p1/min_ss = 0
p1/max_ss = 175
p1/corner_x = 4.7
p1/corner_y = -181.4
p1/fs = +1x +0y
p1/ss = +0x +1y

p2/min_fs = 0
p2/max_fs = 191
p2/min_ss = 176
p2/max_ss = 351
p2/corner_x = -197.3
p2/corner_y = 4.6
p2/fs = +1x +0y
p2/ss = +0x +1y

p3/min_fs = 192
p3/max_fs = 383
p3/min_ss = 176
p3/max_ss = 351
p3/corner_x = 4.7
p3/corner_y = 4.6
p3/fs = +1x +0y
p3/ss = +0x +1y
