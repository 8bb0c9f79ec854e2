; CrystFEL geometry written by photonflow.io.geom.write_geometry
; 4 panels, slab 256 (ss) x 256 (fs) pixels
photon_energy = 9500
peak_list = /entry_1/result_1

res = 13333.333333333334
clen = 0.05
coffset = 0
adu_per_photon = 1
data = /entry_1/data_1/data
dim0 = %
dim1 = ss
dim2 = fs

p0/min_fs = 0
p0/max_fs = 127
p0/min_ss = 0
p0/max_ss = 127
p0/corner_x = -133.8
p0/corner_y = -134.1
p0/fs = +1x +0y
p0/ss = +0x +1y

p1/min_fs = 128
p1/max_fs = 255
p1/min_ss = 0
p1/max_ss = 127
p1/corner_x = -1.8
p1/corner_y = -134.1
p1/fs = +1x +0y
p1/ss = +0x +1y

p2/min_fs = 0
p2/max_fs = 127
p2/min_ss = 128
p2/max_ss = 255
p2/corner_x = -133.8
p2/corner_y = -2.1
p2/fs = +1x +0y
p2/ss = +0x +1y

p3/min_fs = 128
p3/max_fs = 255
p3/min_ss = 128
p3/max_ss = 255
p3/corner_x = -1.8
p3/corner_y = -2.1
p3/fs = +1x +0y
p3/ss = +0x +1y
