[url_template]
{{!ctx.tile_url(layer, 'osmand')}}
[ext]
.png
[min_zoom]
{{ctx.min_zoom}}
[max_zoom]
{{ctx.max_zoom}}
[tile_size]
{{TILE_SIZE}}
[img_density]
16
[avg_img_size]
18000
[expiration_time_minutes]
{{CACHE_MINUTES}}
