set terminal pngcairo size 1400,900 font ",10"
set output 'reloads.png'
set multiplot layout 2,2 title "Node hello server, 2 workers, 32 clients, 10 reloads (dashed: each reload begins)"
set xlabel 'seconds'
set ylabel 'ok per 100 ms'
set y2label 'failed per 100 ms'
set y2range [0:*]
set yrange [0:*]
set ytics nomirror
set y2tics
set key top left
unset arrow
set arrow from 0.54, graph 0 to 0.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.14, graph 0 to 1.14, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.71, graph 0 to 1.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.43, graph 0 to 2.43, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.92, graph 0 to 2.92, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.52, graph 0 to 3.52, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.06, graph 0 to 4.06, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.62, graph 0 to 4.62, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.13, graph 0 to 5.13, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.70, graph 0 to 5.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 41057"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.54, graph 0 to 0.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.11, graph 0 to 2.11, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.76, graph 0 to 3.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.38, graph 0 to 5.38, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.21, graph 0 to 7.21, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.32, graph 0 to 8.32, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.94, graph 0 to 9.94, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.29, graph 0 to 11.29, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.85, graph 0 to 12.85, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 14.40, graph 0 to 14.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 99228"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.66, graph 0 to 0.66, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.38, graph 0 to 1.38, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.05, graph 0 to 2.05, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.68, graph 0 to 2.68, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.17, graph 0 to 3.17, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.70, graph 0 to 3.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.32, graph 0 to 4.32, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.93, graph 0 to 4.93, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.47, graph 0 to 5.47, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.02, graph 0 to 6.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 16015"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.75, graph 0 to 0.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.55, graph 0 to 2.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.45, graph 0 to 4.45, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.19, graph 0 to 6.19, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.87, graph 0 to 7.87, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.70, graph 0 to 9.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.84, graph 0 to 11.84, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.44, graph 0 to 13.44, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 14.81, graph 0 to 14.81, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 16.18, graph 0 to 16.18, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 10 failed of 24630"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
