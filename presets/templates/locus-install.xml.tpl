<?xml version="1.0" encoding="UTF-8"?>
<locusActions>
  <download>
    <source>{{ctx.file_url('locus-strava-heatmap.xml')}}</source>
    <dest>/mapsOnline/custom/strava-heatmap.xml</dest>
    <after>refreshMap</after>
  </download>
</locusActions>
